"""Event factories for tests, benchmarks and the demo: valid events with overridable fields."""

from __future__ import annotations

import uuid
from typing import Any

from schemas import Alert, Quantiles, RequestTiming, WindowStats

BASE_NS = 1_780_000_000_000_000_000
MINUTE_NS = 60_000_000_000


def make_timing(**overrides: Any) -> RequestTiming:
    """A successful ``RequestTiming``; any field may be overridden."""
    values: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "probe_id": "probe-1",
        "started_at": BASE_NS,
        "provider": "simulated",
        "model": "sim-small",
        "endpoint": "http://127.0.0.1:9999/v1/chat/completions",
        "region": "local",
        "workload": "chat",
        "prompt_id": "p1",
        "status": "ok",
        "http_status": 200,
        "ttft_ms": 250.0,
        "e2e_ms": 1250.0,
        "tpot_ms": 10.0,
        "itl_p50_ms": 9.0,
        "itl_p95_ms": 14.0,
        "itl_max_ms": 30.0,
        "decode_tps": 100.0,
        "prompt_tokens": 120,
        "completion_tokens": 101,
        "token_count_source": "usage",
        "price_in_per_mtok": 0.5,
        "price_out_per_mtok": 1.5,
        "cost_usd": 0.0002115,
    }
    values.update(overrides)
    return RequestTiming(**values)


def make_window(**overrides: Any) -> WindowStats:
    """A one-minute ``WindowStats`` ending at ``window_end`` (default ``BASE_NS``); fields overridable.

    ``ttft_p95`` (float) is a shortcut that sets ``ttft_ms`` quantiles around that p95.
    """
    ttft_p95 = float(overrides.pop("ttft_p95", 400.0))
    window_end = int(overrides.pop("window_end", BASE_NS))
    values: dict[str, Any] = {
        "provider": "simulated",
        "model": "sim-small",
        "workload": "chat",
        "region": "local",
        "window": "1m",
        "window_start": window_end - MINUTE_NS,
        "window_end": window_end,
        "count": 60,
        "error_count": 0,
        "error_rate": 0.0,
        "ttft_ms": Quantiles(p50=ttft_p95 * 0.6, p95=ttft_p95, p99=ttft_p95 * 1.2, max=ttft_p95 * 1.5),
        "e2e_ms": Quantiles(p50=1000.0, p95=1500.0, p99=1800.0, max=2000.0),
        "tpot_ms": Quantiles(p50=10.0, p95=14.0, p99=16.0, max=20.0),
        "decode_tps_p50": 100.0,
        "prompt_tokens": 6000,
        "completion_tokens": 6000,
        "cost_usd": 0.012,
        "cost_per_1k_tokens": 0.001,
        "projected_30d_cost_usd": 518.4,
    }
    values.update(overrides)
    return WindowStats(**values)


def make_alert(**overrides: Any) -> Alert:
    """A firing ``Alert``; any field may be overridden."""
    values: dict[str, Any] = {
        "alert_id": uuid.uuid4().hex,
        "rule": "ttft-p95-high",
        "severity": "warning",
        "state": "firing",
        "provider": "simulated",
        "model": "sim-small",
        "workload": "chat",
        "metric": "ttft_p95_ms",
        "value": 900.0,
        "baseline": None,
        "threshold": 800.0,
        "window_end": BASE_NS,
        "message": "ttft_p95_ms 900 > 800 for 3 windows",
    }
    values.update(overrides)
    return Alert(**values)

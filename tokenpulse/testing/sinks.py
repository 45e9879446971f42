"""Event factories for tests, benchmarks and the demo: valid events with overridable fields."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

from tokenpulse.config import Settings
from tokenpulse.schemas import Alert, Quantiles, RequestTiming, WindowStats, encode

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


def settings_for(bootstrap: str, influx: Any, topic_prefix: str) -> Settings:
    """``Settings`` pointing at a test's Kafka, ``InfluxEndpoint`` and topic prefix, ignoring the environment
    (whose variables would otherwise win over the test's own bucket)."""
    return Settings.model_construct(
        kafka_bootstrap=bootstrap,
        topic_prefix=topic_prefix,
        influx_url=influx.url.rstrip("/"),
        influx_token=SecretStr(influx.token),
        influx_org=influx.org,
        influx_bucket=influx.bucket,
    )


def produce(bootstrap: str, topic: str, events: Iterable[BaseModel | bytes], key: bytes | None = None) -> int:
    """Publish events (or raw bytes) synchronously with kafka-python; returns how many were sent."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=1 << 20)
    sent = 0
    try:
        for event in events:
            if isinstance(event, bytes):
                producer.send(topic, value=event, key=key)
            else:
                event_key = event.kafka_key() if hasattr(event, "kafka_key") else key
                producer.send(topic, value=encode(event), key=event_key)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.25) -> None:
    """Poll ``predicate`` until true; raise ``AssertionError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


def flux_count(client: Any, bucket: str, measurement: str, field: str, start: str = "0") -> int:
    """Number of points of ``measurement`` that carry ``field`` in ``bucket``."""
    query = (
        f'from(bucket: "{bucket}") |> range(start: {start}) '
        f'|> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}") '
        "|> group() |> count()"
    )
    tables = client.query_api().query(query)
    return int(sum(record.get_value() for table in tables for record in table.records))

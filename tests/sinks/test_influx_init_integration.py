"""``influx init`` creates the rollup bucket, sets retention and installs the downsampling task; its Flux
rolls llm_request up per hour."""

from __future__ import annotations

import time

import numpy as np
import pytest
from influxdb_client.client.write_api import SYNCHRONOUS

from tokenpulse.sinks.influx_admin import downsample_flux, init_influx, task_name
from tokenpulse.sinks.lineprotocol import request_line, window_line
from tokenpulse.streams.engine import PartitionWindows, WindowConfig
from tokenpulse.testing.sinks import make_timing

pytestmark = pytest.mark.integration

MINUTE_NS = 60 * 10**9


def test_init_is_idempotent_and_task_rolls_up(influx) -> None:
    with influx.client() as client:
        first = init_influx(client, influx.org, influx.bucket, retention="35d", rollup_retention="400d")
        second = init_influx(client, influx.org, influx.bucket, retention="35d", rollup_retention="400d")
        assert first.task_created and not second.task_created and first.task_id == second.task_id
        rollup = client.buckets_api().find_bucket_by_name(f"{influx.bucket}_rollup")
        assert rollup.retention_rules[0].every_seconds == 400 * 86_400
        raw = client.buckets_api().find_bucket_by_name(influx.bucket)
        assert raw.retention_rules[0].every_seconds == 35 * 86_400
        task = client.tasks_api().find_task_by_id(first.task_id)
        assert task.name == task_name(influx.bucket) and task.every == "1h" and task.status == "active"


def test_the_hourly_rollup_counts_each_request_once_whatever_the_window_specs(influx) -> None:
    """Requests of one hour, and the 1m and hopping 5m/1m windows a worker emits for them: the rollup holds
    every request once, its errors, its cost, and the p95 of the successful requests (numpy, exact)."""
    hour_ns = 3600 * 10**9
    start = (time.time_ns() // hour_ns) * hour_ns - hour_ns  # the last whole hour
    rng = np.random.default_rng(3)
    events = []
    for i in range(120):
        error = i % 7 == 0
        ttft = float(round(rng.gamma(4.0, 50.0), 3))
        events.append(
            make_timing(
                started_at=start + 10 * MINUTE_NS + i * 10**9 * 15,
                status="error" if error else "ok",
                error_kind="http_429" if error else None,
                ttft_ms=None if error else ttft,
                e2e_ms=2.0 if error else ttft + 500.0,
                tpot_ms=None if error else 10.0,
                cost_usd=0.0 if error else 0.001,
            )
        )
    config = WindowConfig.parse(["1m", "5m/1m"], "0s")
    windows = PartitionWindows(0, config)
    for offset, event in enumerate(events):
        windows.handle(offset, event)
    windows.handle(len(events), make_timing(started_at=start + 2 * hour_ns))  # closes every window
    emitted = [w for w in windows.take_emitted() if w.window_end <= start + hour_ns]
    assert sum(w.count for w in emitted if w.window == "5m") == 5 * len(events)  # hopping: five windows each
    with influx.client() as client:
        init_influx(client, influx.org, influx.bucket)
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(influx.bucket, influx.org, [request_line(e) for e in events] + [window_line(w) for w in emitted])
        flux = downsample_flux(influx.bucket, f"{influx.bucket}_rollup", influx.org)
        client.query_api().query(flux.replace("task.every * 2", "3h").replace("option task", "task_opts"))
        tables = client.query_api().query(
            f'from(bucket: "{influx.bucket}_rollup") |> range(start: -1d) '
            '|> filter(fn: (r) => r._measurement == "llm_window_1h")'
        )
        values = {r.get_field(): r.get_value() for t in tables for r in t.records}
    ok_ttft = [e.ttft_ms for e in events if e.ttft_ms is not None]
    errors = sum(e.status == "error" for e in events)
    assert values["count"] == len(events) and values["error_count"] == errors
    assert values["cost_usd"] == pytest.approx(0.001 * (len(events) - errors))
    assert values["ttft_p95_ms"] == float(np.percentile(ok_ttft, 95, method="inverted_cdf"))
    assert values["e2e_p95_ms"] == float(np.percentile([t + 500.0 for t in ok_ttft], 95, method="inverted_cdf"))

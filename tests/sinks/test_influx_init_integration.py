"""``influx init`` creates the rollup bucket, sets retention and installs the downsampling task; its Flux
rolls llm_window up per hour."""

from __future__ import annotations

import pytest
from influxdb_client.client.write_api import SYNCHRONOUS

from tokenpulse.sinks.influx_admin import downsample_flux, init_influx, task_name
from tokenpulse.sinks.lineprotocol import window_line
from tokenpulse.testing.sinks import make_window

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

        # Run the task's Flux as a query over windows of the last hour: the rollup holds their mean/sum.
        import time

        hour_ns = 3600 * 10**9
        end = (time.time_ns() // hour_ns) * hour_ns - hour_ns + 30 * MINUTE_NS
        windows = [make_window(window_end=end + i * MINUTE_NS, ttft_p95=100.0 * (i + 1), count=10) for i in range(4)]
        client.write_api(write_options=SYNCHRONOUS).write(influx.bucket, influx.org, [window_line(w) for w in windows])
        flux = downsample_flux(influx.bucket, f"{influx.bucket}_rollup", influx.org)
        client.query_api().query(flux.replace("task.every * 2", "3h").replace("option task", "task_opts"))
        tables = client.query_api().query(
            f'from(bucket: "{influx.bucket}_rollup") |> range(start: -1d) '
            '|> filter(fn: (r) => r._measurement == "llm_window_1h") '
            '|> filter(fn: (r) => r._field == "ttft_p95_ms" or r._field == "count")'
        )
        values = {r.get_field(): r.get_value() for t in tables for r in t.records}
        assert values == {"ttft_p95_ms": 250.0, "count": 40.0}

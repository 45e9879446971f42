"""influxd stopped for 30 s while events flow: after its restart every point is present, none duplicated."""

from __future__ import annotations

import time

import pytest

from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.testing.sinks import BASE_NS, flux_count, make_timing, produce, settings_for, wait_until

pytestmark = pytest.mark.integration


def test_influx_outage_loses_and_duplicates_nothing(kafka_bootstrap, restartable_influx, topic_prefix) -> None:
    influx = restartable_influx.influx.with_new_bucket("outage")
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    topic = settings.topics.request_timings
    events = [make_timing(started_at=BASE_NS + i * 1_000_000) for i in range(3000)]
    runner = SinkRunner(settings, sinks=("llm_request",), max_records=500)
    runner.start()
    sink = runner.kafka_sinks[0]
    try:
        produce(kafka_bootstrap, topic, events[:1000])
        wait_until(lambda: sink.stats.written >= 1000, 60, "first 1000 points written")

        restartable_influx.stop()
        stopped_at = time.monotonic()
        # Events keep flowing during the outage, in several batches.
        for start in range(1000, 3000, 250):
            produce(kafka_bootstrap, topic, events[start : start + 250])
            time.sleep(2)
        assert sink.stats.written == 1000  # nothing acknowledged (so nothing committed) during the outage
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
        restartable_influx.start()

        wait_until(lambda: sink.stats.written >= 3000, 120, "the backlog to be written after the restart")
        with influx.client() as client:
            assert flux_count(client, influx.bucket, "llm_request", "e2e_ms") == 3000
            assert flux_count(client, influx.bucket, "llm_request", "event_id") == 3000
            tables = client.query_api().query(
                f'from(bucket: "{influx.bucket}") |> range(start: 0) '
                '|> filter(fn: (r) => r._measurement == "llm_request" and r._field == "event_id") '
                "|> group() |> distinct() |> count()"
            )
            assert [r.get_value() for t in tables for r in t.records] == [3000]
    finally:
        runner.stop()
    assert sink.stats.dead_lettered == 0
    assert sink.stats.write_retries > 0

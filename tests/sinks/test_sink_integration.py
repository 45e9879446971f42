"""Sinks against real Kafka and real influxd: values round-trip, replays do not duplicate, bad points are
dead-lettered with the rejected line."""

from __future__ import annotations

import uuid

import pytest
from influxdb_client.client.write_api import SYNCHRONOUS
from kafka import KafkaConsumer

from tokenpulse.schemas import RequestTiming
from tokenpulse.sinks.lineprotocol import request_line
from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.testing.sinks import (
    BASE_NS,
    MINUTE_NS,
    flux_count,
    make_alert,
    make_timing,
    make_window,
    produce,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration


def _timings(n: int) -> list[RequestTiming]:
    events = []
    for i in range(n):
        error = i % 10 == 9
        events.append(
            make_timing(
                started_at=BASE_NS + i * 1_000_003,
                ttft_ms=None if error else 100.0 + i * 0.5,
                e2e_ms=500.0 + i,
                tpot_ms=None if error else 4.0 + i / 100,
                status="error" if error else "ok",
                error_kind="http_5xx" if error else None,
                provider="sim-a" if i % 2 else "sim-b",
                prompt_tokens=10 + i,
                completion_tokens=20 + i,
                cost_usd=i * 1e-6,
            )
        )
    return events


def _read_dlq(bootstrap: str, topic: str, expected: int) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15_000,
        group_id=f"dlq-reader-{uuid.uuid4().hex[:6]}",
    )
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
    finally:
        consumer.close()
    return records


def test_round_trip_identical_values_and_replay_is_idempotent(kafka_bootstrap, influx, topic_prefix) -> None:
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    topics = settings.topics
    timings = _timings(300)
    windows = [make_window(window_end=BASE_NS + (i + 1) * MINUTE_NS, ttft_p95=300.0 + i) for i in range(20)]
    alerts = [make_alert(state="firing"), make_alert(state="resolved", window_end=BASE_NS + MINUTE_NS, value=400.0)]
    runner = SinkRunner(settings)
    runner.start()
    try:
        produce(kafka_bootstrap, topics.request_timings, [*timings, b"{not json", b'{"schema_version": 1}'])
        produce(kafka_bootstrap, topics.window_stats, windows)
        produce(kafka_bootstrap, topics.alerts, alerts)
        with influx.client() as client:
            wait_until(lambda: flux_count(client, influx.bucket, "llm_request", "e2e_ms") == 300, 60, "300 timings")
            wait_until(lambda: flux_count(client, influx.bucket, "llm_window", "count") == 20, 30, "20 windows")
            wait_until(lambda: flux_count(client, influx.bucket, "llm_alert", "threshold") == 2, 30, "2 alerts")

            tables = client.query_api().query(
                f'from(bucket: "{influx.bucket}") |> range(start: 0) '
                '|> filter(fn: (r) => r._measurement == "llm_request") '
                '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
                "|> map(fn: (r) => ({r with time_ns: int(v: r._time)}))"
            )
            rows = {r.values["event_id"]: r.values for t in tables for r in t.records}
            assert len(rows) == 300
            for event in timings:
                row = rows[str(event.event_id)]
                assert row["provider"] == event.provider and row["status"] == event.status
                assert row.get("error_kind") == event.error_kind
                assert row["e2e_ms"] == event.e2e_ms and row.get("ttft_ms") == event.ttft_ms
                assert row.get("tpot_ms") == event.tpot_ms and row["cost_usd"] == event.cost_usd
                assert row["prompt_tokens"] == event.prompt_tokens
                assert row["time_ns"] == event.started_at

            window_tables = client.query_api().query(
                f'from(bucket: "{influx.bucket}") |> range(start: 0) '
                '|> filter(fn: (r) => r._measurement == "llm_window" and r._field == "ttft_p95_ms")'
            )
            got = sorted(r.get_value() for t in window_tables for r in t.records)
            assert got == sorted(w.ttft_ms.p95 for w in windows if w.ttft_ms is not None)

            alert_tables = client.query_api().query(
                f'from(bucket: "{influx.bucket}") |> range(start: 0) '
                '|> filter(fn: (r) => r._measurement == "llm_alert" and r._field == "message")'
            )
            assert sorted(r.values["state"] for t in alert_tables for r in t.records) == ["firing", "resolved"]

            # Replay everything: the point counts must not change.
            produce(kafka_bootstrap, topics.request_timings, timings)
            produce(kafka_bootstrap, topics.window_stats, windows)
            request_sink = next(s for s in runner.kafka_sinks if s.name == "llm_request")
            wait_until(lambda: request_sink.stats.records >= 602, 60, "replayed timings consumed")
            window_sink = next(s for s in runner.kafka_sinks if s.name == "llm_window")
            wait_until(lambda: window_sink.stats.records >= 40, 30, "replayed windows consumed")
            assert flux_count(client, influx.bucket, "llm_request", "e2e_ms") == 300
            assert flux_count(client, influx.bucket, "llm_request", "event_id") == 300
            assert flux_count(client, influx.bucket, "llm_window", "count") == 20
        assert request_sink.stats.dead_lettered == 2
    finally:
        runner.stop()
    dead = _read_dlq(kafka_bootstrap, topics.sink_dlq, 2)
    errors = sorted(dict(r.headers)["error"].decode() for r in dead)
    assert len(errors) == 2 and all(e.startswith("invalid event:") for e in errors)
    assert {r.value for r in dead} == {b"{not json", b'{"schema_version": 1}'}
    assert all(dict(r.headers)["source-topic"].decode() == topics.request_timings for r in dead)


def test_field_type_conflict_is_dead_lettered_with_the_line(kafka_bootstrap, influx, topic_prefix) -> None:
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    topics = settings.topics
    # Another writer already made itl_p95_ms a string field in this bucket: our float values conflict.
    with influx.client() as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            influx.bucket, influx.org, f'llm_request,provider=other itl_p95_ms="oops" {BASE_NS - 10**9}'
        )
    events = [
        make_timing(started_at=BASE_NS + i * 1_000_000, itl_p95_ms=12.0 if i in (2, 5, 7) else None) for i in range(10)
    ]
    runner = SinkRunner(settings, sinks=("llm_request",))
    runner.start()
    try:
        produce(kafka_bootstrap, topics.request_timings, events)
        sink = runner.kafka_sinks[0]
        wait_until(lambda: sink.stats.records >= 10, 60, "10 timings handled")
        assert sink.stats.written == 7 and sink.stats.dead_lettered == 3
        with influx.client() as client:
            assert flux_count(client, influx.bucket, "llm_request", "e2e_ms") == 7
    finally:
        runner.stop()
    dead = _read_dlq(kafka_bootstrap, topics.sink_dlq, 3)
    lines = sorted(dict(r.headers)["rejected-line"].decode() for r in dead)
    assert lines == sorted(request_line(events[i]) for i in (2, 5, 7))
    for record in dead:
        headers = dict(record.headers)
        assert "field type conflict" in headers["error"].decode()
        assert RequestTiming.model_validate_json(record.value).event_id in {events[i].event_id for i in (2, 5, 7)}

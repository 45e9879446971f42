"""A restarted alert engine rebuilds its regression baselines from InfluxDB's ``llm_window`` history."""

from __future__ import annotations

import socket
import time

import pytest

from tokenpulse.sinks.rules import RuleEngine, parse_rules
from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.testing.sinks import MINUTE_NS, flux_count, make_window, produce, settings_for, wait_until

pytestmark = pytest.mark.integration

RULES = parse_rules(
    {
        "rules": [
            {
                "name": "ttft-regression",
                "kind": "regression",
                "metric": "ttft_p95_ms",
                "worse_by_pct": 50,
                "baseline_period": "1h",
                "min_samples": 30,
                "min_baseline_windows": 3,
                "for_windows": 1,
            }
        ]
    }
)


def test_baseline_survives_a_restart(kafka_bootstrap, influx, topic_prefix) -> None:
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    topic = settings.topics.window_stats
    # Recent windows (the seed reads the rules' baseline period back from now): 5 healthy ones, then
    # after the restart one where TTFT p95 doubled.
    first_end = (time.time_ns() // MINUTE_NS - 10) * MINUTE_NS
    healthy = [make_window(ttft_p95=400.0, window_end=first_end + i * MINUTE_NS) for i in range(5)]
    regressed = make_window(ttft_p95=800.0, window_end=first_end + 5 * MINUTE_NS)

    before = SinkRunner(settings, RULES, sinks=("llm_window",))
    before.start()
    try:
        produce(kafka_bootstrap, topic, healthy)
        first = before.alert_engine
        assert first is not None
        wait_until(lambda: first.windows_seen == 5, 60, "the healthy windows to be evaluated")
        with influx.client() as client:
            wait_until(lambda: flux_count(client, influx.bucket, "llm_window", "ttft_p95_ms") == 5, 60, "llm_window")
        assert first.alerts == []
    finally:
        before.stop()

    # Same consumer groups: the restarted engine resumes after the healthy windows, so its baseline
    # can only come from InfluxDB (the alert-state topic, which would also bring it back, is not read).
    after = SinkRunner(settings, RULES, sinks=("llm_window",), restore_state=False)
    after.start()
    try:
        assert after.baseline_values_seeded == 5
        produce(kafka_bootstrap, topic, [regressed])
        engine = after.alert_engine
        assert engine is not None
        wait_until(lambda: engine.windows_seen == 1, 60, "the regressed window to be evaluated")
        wait_until(lambda: len(engine.alerts) == 1, 30, "the firing alert")
    finally:
        after.stop()
    [alert] = engine.alerts
    assert (alert.state, alert.rule, alert.value, alert.baseline) == ("firing", "ttft-regression", 800.0, 400.0)
    # Without the seed the same window meets an empty baseline and nothing fires.
    assert RuleEngine(RULES).observe(regressed) == []


def test_unreachable_influx_leaves_baselines_empty_and_alerting_running(kafka_bootstrap, influx, topic_prefix) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there any more
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    settings = settings.model_copy(update={"influx_url": f"http://127.0.0.1:{port}"})
    runner = SinkRunner(settings, RULES, sinks=())
    runner.start()
    try:
        assert runner.baseline_values_seeded == 0
        engine = runner.alert_engine
        assert engine is not None
        end = (time.time_ns() // MINUTE_NS - 10) * MINUTE_NS
        windows = [make_window(ttft_p95=v, window_end=end + i * MINUTE_NS) for i, v in enumerate([400.0] * 3 + [800.0])]
        produce(kafka_bootstrap, settings.topics.window_stats, windows)
        wait_until(lambda: len(engine.alerts) == 1, 60, "the alert from the stream-built baseline")
    finally:
        runner.stop()
    assert engine.alerts[0].baseline == 400.0

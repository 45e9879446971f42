"""Seeding regression baselines from past windows (what a restarted alert engine reads from InfluxDB)."""

from __future__ import annotations

from tokenpulse.durations import parse_duration_ns
from tokenpulse.sinks.rules import BaselineSample, RuleEngine, parse_rules
from tokenpulse.testing.sinks import BASE_NS, MINUTE_NS, make_window

REGRESSION = {
    "name": "ttft-regression",
    "kind": "regression",
    "metric": "ttft_p95_ms",
    "worse_by_pct": 50,
    "baseline_period": "1h",
    "min_samples": 30,
    "min_baseline_windows": 3,
}


def _engine(*rules: dict) -> RuleEngine:
    return RuleEngine(parse_rules({"rules": list(rules)}))


def _sample(i: int, ttft_p95_ms: float, **overrides: object) -> BaselineSample:
    values: dict = {
        "provider": "simulated",
        "model": "sim-small",
        "workload": "chat",
        "region": "local",
        "window": "1m",
        "window_end": BASE_NS + i * MINUTE_NS,
        "count": 60,
        "metrics": {"ttft_p95_ms": ttft_p95_ms, "count": 60.0},
    }
    values.update(overrides)
    return BaselineSample(**values)


def _window(i: int, ttft_p95: float):
    return make_window(ttft_p95=ttft_p95, window_end=BASE_NS + i * MINUTE_NS)


def test_seeded_baseline_lets_the_first_regressed_window_fire() -> None:
    seeded, empty = _engine(REGRESSION), _engine(REGRESSION)
    assert seeded.seed_samples(_sample(i, 400.0) for i in range(5)) == 5
    assert empty.observe(_window(5, 900.0)) == []  # no baseline yet: nothing to compare against
    [alert] = seeded.observe(_window(5, 900.0))
    assert (alert.state, alert.value, alert.baseline) == ("firing", 900.0, 400.0)


def test_windows_reread_after_seeding_are_judged_but_not_counted_twice() -> None:
    engine = _engine(dict(REGRESSION, min_baseline_windows=5))
    engine.seed_samples(_sample(i, 400.0) for i in range(4))
    # The window sink wrote windows 0-3 to InfluxDB, the alert engine had committed only up to 1: Kafka
    # re-delivers 2 and 3. They must still be evaluated (no alert), and must not pad the baseline to 5.
    assert engine.observe(_window(2, 400.0)) == [] and engine.observe(_window(3, 400.0)) == []
    assert engine.observe(_window(4, 900.0)) == []  # 4 baseline windows < 5 required (6 if double-counted)
    [alert] = engine.observe(_window(5, 900.0))  # window 4 joined the baseline: now 5 windows, median 400
    assert alert.state == "firing" and alert.baseline == 400.0


def test_seeding_takes_only_matching_keys_metrics_and_rules() -> None:
    threshold = {"name": "t", "kind": "threshold", "metric": "ttft_p95_ms", "above": 1}
    engine = _engine(dict(REGRESSION, match={"provider": "sim*"}), threshold)
    taken = engine.seed_samples(
        [_sample(0, 400.0), _sample(1, 400.0, provider="other"), _sample(2, 0.0, metrics={"e2e_p95_ms": 9.0})]
    )
    assert taken == 1


def test_out_of_order_samples_are_sorted_and_the_period_is_the_longest() -> None:
    engine = _engine(REGRESSION, {"name": "cost", "kind": "cost", "worse_by_pct": 20, "baseline_period": "24h"})
    assert engine.baseline_period_ns() == parse_duration_ns("24h")
    assert engine.seed_samples([_sample(3, 400.0), _sample(1, 400.0), _sample(2, 400.0)]) == 3
    assert [a.state for a in engine.observe(_window(4, 900.0))] == ["firing"]
    assert _engine({"name": "t", "kind": "threshold", "metric": "ttft_p95_ms", "above": 1}).baseline_period_ns() is None

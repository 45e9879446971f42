from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenpulse.durations import parse_duration_ns
from tokenpulse.sinks.rules import BaselineSample, RuleEngine, RulesError, load_rules, metric_value, parse_rules
from tokenpulse.testing.sinks import BASE_NS, MINUTE_NS, make_window


def _engine(*rules: dict) -> RuleEngine:
    return RuleEngine(parse_rules({"rules": list(rules)}))


def _feed(engine: RuleEngine, values: list[float], start: int = 0, **extra) -> list:
    alerts = []
    for i, value in enumerate(values, start=start):
        alerts.extend(engine.observe(make_window(ttft_p95=value, window_end=BASE_NS + i * MINUTE_NS, **extra)))
    return alerts


THRESHOLD = {
    "name": "ttft-high",
    "kind": "threshold",
    "metric": "ttft_p95_ms",
    "above": 800,
    "for_windows": 3,
    "clear_windows": 2,
    "hysteresis_pct": 10,
}


def test_threshold_fires_once_after_n_consecutive_windows_and_resolves_once() -> None:
    engine = _engine(THRESHOLD)
    alerts = _feed(engine, [400, 900, 900, 900, 950, 1000, 700, 700, 400, 400])
    assert [(a.state, a.window_end) for a in alerts] == [
        ("firing", BASE_NS + 3 * MINUTE_NS),
        ("resolved", BASE_NS + 7 * MINUTE_NS),
    ]
    firing, resolved = alerts
    assert firing.alert_id == resolved.alert_id
    assert firing.value == 900.0 and firing.threshold == 800.0 and firing.metric == "ttft_p95_ms"
    assert "ttft-high firing" in firing.message


def test_threshold_needs_consecutive_windows() -> None:
    assert _feed(_engine(THRESHOLD), [900, 900, 400, 900, 900, 400]) == []


def test_hysteresis_band_prevents_flapping() -> None:
    # 790 is below the bound (800) but above the clear level (720): neither a new breach nor a recovery.
    alerts = _feed(_engine(THRESHOLD), [900, 900, 900, 790, 810, 790, 790, 810, 790, 700, 700])
    assert [a.state for a in alerts] == ["firing", "resolved"]


def test_cooldown_suppresses_refire_within_period() -> None:
    rule = dict(THRESHOLD, for_windows=1, clear_windows=1, cooldown="5m")
    alerts = _feed(_engine(rule), [900, 400, 900, 900, 400, 400, 400, 400, 900])
    # resolved at minute 1; 900s at minutes 2-3 fall inside the cooldown; minute 8 is after it.
    assert [(a.state, (a.window_end - BASE_NS) // MINUTE_NS) for a in alerts] == [
        ("firing", 0),
        ("resolved", 1),
        ("firing", 8),
    ]


def test_replayed_windows_do_not_alert_twice() -> None:
    engine = _engine(dict(THRESHOLD, for_windows=1))
    first = _feed(engine, [900])
    again = _feed(engine, [900])
    assert len(first) == 1 and again == []


def test_below_threshold_for_throughput() -> None:
    rule = {"name": "slow-decode", "kind": "threshold", "metric": "decode_tps_p50", "below": 50, "clear_windows": 1}
    engine = _engine(rule)
    alerts = []
    for i, tps in enumerate([100, 40, 52, 60]):
        alerts += engine.observe(make_window(decode_tps_p50=tps, window_end=BASE_NS + i * MINUTE_NS))
    # 52 is inside the 10 % band above 50 (55.6), 60 clears.
    assert [(a.state, a.value) for a in alerts] == [("firing", 40.0), ("resolved", 60.0)]


REGRESSION = {
    "name": "ttft-regress",
    "kind": "regression",
    "metric": "ttft_p95_ms",
    "worse_by_pct": 50,
    "baseline_period": "1h",
    "min_samples": 50,
    "min_baseline_windows": 3,
    "severity": "critical",
}


def test_regression_against_trailing_median() -> None:
    engine = _engine(REGRESSION)
    alerts = _feed(engine, [400, 420, 380, 410, 820, 800, 400, 390])
    assert [(a.state, (a.window_end - BASE_NS) // MINUTE_NS) for a in alerts] == [("firing", 4), ("resolved", 6)]
    firing = alerts[0]
    assert firing.baseline == pytest.approx(405.0)  # median of 400, 420, 380, 410
    assert firing.threshold == pytest.approx(607.5)
    assert firing.severity == "critical"
    assert "+102.5%" in firing.message


def test_regression_needs_enough_samples_on_both_sides() -> None:
    engine = _engine(REGRESSION)
    # 60 requests per window: two baseline windows (120) are enough samples but too few windows.
    assert _feed(engine, [400, 400, 900]) == []
    # a current window with too few requests is not judged
    engine = _engine(REGRESSION)
    _feed(engine, [400, 400, 400, 400])
    assert engine.observe(make_window(ttft_p95=900, count=10, window_end=BASE_NS + 10 * MINUTE_NS)) == []
    # and with too few requests in the baseline nothing fires either
    engine = _engine(dict(REGRESSION, min_samples=1000))
    assert _feed(engine, [400, 400, 400, 400, 900]) == []


def test_regression_baseline_forgets_outside_period() -> None:
    engine = _engine(dict(REGRESSION, baseline_period="3m"))
    _feed(engine, [100, 100, 100, 100, 100])
    # A slow drift is learned as the new normal: by minute 10 the baseline is about 400.
    for i, value in enumerate([200, 300, 400, 400, 400], start=5):
        engine.observe(make_window(ttft_p95=value, window_end=BASE_NS + i * MINUTE_NS))
    assert engine.observe(make_window(ttft_p95=500, window_end=BASE_NS + 10 * MINUTE_NS)) == []


def test_cost_rule_compares_cost_per_1k_tokens() -> None:
    engine = _engine({"name": "cost-up", "kind": "cost", "worse_by_pct": 20, "min_samples": 10})
    alerts = []
    for i, cost in enumerate([1.0, 1.0, 1.05, 1.0, 1.3]):
        alerts += engine.observe(make_window(cost_per_1k_tokens=cost, window_end=BASE_NS + i * MINUTE_NS))
    assert [(a.state, a.metric, a.value) for a in alerts] == [("firing", "cost_per_1k_tokens", 1.3)]


def test_error_rate_rule_with_min_samples() -> None:
    engine = _engine({"name": "errors", "kind": "error_rate", "above": 0.1, "min_samples": 50})
    w = BASE_NS
    assert engine.observe(make_window(count=20, error_count=10, error_rate=0.5, window_end=w)) == []
    fired = engine.observe(make_window(count=100, error_count=30, error_rate=0.3, window_end=w + MINUTE_NS))
    assert [(a.state, a.metric, a.value) for a in fired] == [("firing", "error_rate", 0.3)]
    resolved = engine.observe(make_window(count=100, error_count=0, error_rate=0.0, window_end=w + 2 * MINUTE_NS))
    assert [a.state for a in resolved] == ["resolved"]


def test_match_filters_keys() -> None:
    engine = _engine(dict(THRESHOLD, for_windows=1, match={"provider": "other*"}))
    assert _feed(engine, [900]) == []
    assert len(_feed(engine, [900], provider="other-cloud")) == 1


def test_no_data_alert_and_resolve_when_data_returns() -> None:
    engine = _engine(dict(THRESHOLD, no_data={"after": "5m", "action": "alert"}))
    _feed(engine, [400])
    assert engine.check_idle(BASE_NS + 4 * MINUTE_NS) == []
    fired = engine.check_idle(BASE_NS + 6 * MINUTE_NS)
    assert [(a.state, a.metric) for a in fired] == [("firing", "no_data")]
    assert engine.check_idle(BASE_NS + 7 * MINUTE_NS) == []
    back = _feed(engine, [400], start=8)
    assert [(a.state, a.metric, a.alert_id) for a in back] == [("resolved", "no_data", fired[0].alert_id)]


def test_no_data_resolve_policy_resolves_firing_alert() -> None:
    engine = _engine(dict(THRESHOLD, for_windows=1, no_data={"after": "5m", "action": "resolve"}))
    assert [a.state for a in _feed(engine, [900])] == ["firing"]
    assert [a.state for a in engine.check_idle(BASE_NS + 10 * MINUTE_NS)] == ["resolved"]
    assert engine.firing() == []


def test_seed_warms_baseline_without_alerting() -> None:
    engine = _engine(REGRESSION)
    engine.seed(make_window(ttft_p95=400, window_end=BASE_NS + i * MINUTE_NS) for i in range(5))
    alerts = _feed(engine, [900], start=5)
    assert [a.state for a in alerts] == ["firing"]


def test_metric_value_reads_quantiles_and_scalars() -> None:
    stats = make_window(ttft_p95=500)
    assert metric_value(stats, "ttft_p95_ms") == 500.0
    assert metric_value(stats, "e2e_p99_ms") == 1800.0
    assert metric_value(stats, "error_rate") == 0.0
    assert metric_value(make_window(ttft_ms=None), "ttft_p95_ms") is None


def test_durations() -> None:
    assert parse_duration_ns("90s") == 90_000_000_000
    assert parse_duration_ns("24h") == 86_400_000_000_000
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ns("soon")


def test_invalid_rules_name_rule_and_field() -> None:
    with pytest.raises(RulesError, match=r"rule 'bad'.*metric"):
        parse_rules({"rules": [{"name": "bad", "kind": "threshold", "metric": "ttft", "above": 1}]})
    with pytest.raises(RulesError, match="exactly one of 'above' or 'below'"):
        parse_rules({"rules": [{"name": "b", "kind": "threshold", "metric": "ttft_p95_ms"}]})
    with pytest.raises(RulesError, match="used twice"):
        parse_rules({"rules": [THRESHOLD, THRESHOLD]})
    with pytest.raises(RulesError, match="cooldown"):
        parse_rules({"rules": [dict(THRESHOLD, cooldown="a while")]})


def test_load_rules_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(bad)


def test_example_rules_file_is_valid() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "rules.yaml"
    rule_set = load_rules(examples)
    assert {r.kind for r in rule_set.rules} == {"threshold", "regression", "error_rate", "cost"}


def test_region_and_window_are_separate_keys() -> None:
    engine = _engine(THRESHOLD)
    alerts = []
    for region, window in (("eu", "1m"), ("us", "1m"), ("eu", "5m")):
        alerts += _feed(engine, [900, 900, 900], region=region, window=window)
    assert [(a.region, a.window, a.state) for a in alerts] == [
        ("eu", "1m", "firing"),
        ("us", "1m", "firing"),
        ("eu", "5m", "firing"),
    ]
    assert len({a.alert_id for a in alerts}) == 3
    assert len({a.kafka_key() for a in alerts}) == 3
    assert alerts[0].kafka_key() == b"ttft-high/simulated/sim-small/chat/eu/1m"


def test_state_round_trip_resolves_with_the_same_alert_id() -> None:
    """A restarted engine given the persisted state resolves the alert the first one raised."""
    before = _engine(THRESHOLD)
    [firing] = _feed(before, [900, 900, 900])
    changed = before.take_changed_states()
    assert before.take_changed_states() == {}  # taken once
    assert [a.alert_id for a in before.firing_alerts()] == [firing.alert_id]

    after = _engine(THRESHOLD)
    for key, state in changed.items():
        after.restore_state(key, json.loads(json.dumps(state)))
    assert after.firing() == before.firing()
    assert after.firing_alerts() == [firing]
    assert _feed(after, [900], start=2) == []  # already judged before the restart
    [resolved] = _feed(after, [400, 400], start=3)
    assert (resolved.state, resolved.alert_id) == ("resolved", firing.alert_id)
    assert after.firing_alerts() == []


def test_state_round_trip_keeps_cooldown_and_leaves_the_baseline_to_the_seed() -> None:
    rule = {
        "name": "reg",
        "kind": "regression",
        "metric": "ttft_p95_ms",
        "worse_by_pct": 50,
        "min_samples": 1,
        "min_baseline_windows": 3,
        "cooldown": "10m",
    }
    before = _engine(rule)
    alerts = _feed(before, [400, 400, 400, 900, 400])
    assert [a.state for a in alerts] == ["firing", "resolved"]
    after = _engine(rule)
    for key, state in before.take_changed_states().items():
        assert "baseline" not in state  # seeded from InfluxDB at start-up instead
        after.restore_state(key, json.loads(json.dumps(state)))
    assert _feed(after, [900], start=5) == []  # within the cooldown, as without a restart
    assert _feed(after, [900], start=20) == []  # no baseline yet
    seed = [
        BaselineSample(
            "simulated", "sim-small", "chat", "1m", BASE_NS + i * MINUTE_NS, 60, {"ttft_p95_ms": 400.0}, "local"
        )
        for i in range(21, 24)
    ]
    assert after.seed_samples(seed) == 3
    assert [a.state for a in _feed(after, [900], start=24)] == ["firing"]


def test_rules_name_ttfa_and_the_cache_hit_ratio() -> None:
    from tokenpulse.schemas import Quantiles

    ttfa = {"name": "answer-slow", "kind": "threshold", "metric": "ttfa_p95_ms", "above": 2000, "clear_windows": 1}
    cache = {"name": "cache-cold", "kind": "threshold", "metric": "cache_hit_ratio", "below": 0.5, "clear_windows": 1}
    engine = _engine(ttfa, cache)
    alerts = []
    for i, (p95, ratio) in enumerate([(900.0, 0.8), (2500.0, 0.2), (900.0, 0.9)]):
        window = make_window(
            window_end=BASE_NS + i * MINUTE_NS,
            ttfa_ms=Quantiles(p50=p95 / 2, p95=p95, p99=p95, max=p95),
            cache_hit_ratio=ratio,
        )
        assert metric_value(window, "ttfa_p95_ms") == p95 and metric_value(window, "cache_hit_ratio") == ratio
        alerts += engine.observe(window)
    assert sorted((a.rule, a.state, a.value) for a in alerts) == [
        ("answer-slow", "firing", 2500.0),
        ("answer-slow", "resolved", 900.0),
        ("cache-cold", "firing", 0.2),
        ("cache-cold", "resolved", 0.9),
    ]

"""A window's latency quantiles are those of its successful requests; token details add up."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpulse.streams.aggregate import PaneAccumulator, StatsKey, window_stats
from tokenpulse.streams.sketch import RELATIVE_ACCURACY
from tokenpulse.testing.sinks import make_timing

S = 1_000_000_000


def within(estimate: float, values: list[float], q: float) -> bool:
    lower = np.quantile(values, q, method="lower")
    higher = np.quantile(values, q, method="higher")
    return bool(lower * (1 - RELATIVE_ACCURACY) - 1e-9 <= estimate <= higher * (1 + RELATIVE_ACCURACY) + 1e-9)


def test_failed_requests_do_not_move_latency_quantiles() -> None:
    rng = np.random.default_rng(5)
    ok = []
    for _ in range(400):
        ttft = float(rng.gamma(4.0, 50.0)) + 1
        ttfa = ttft + float(rng.gamma(2.0, 100.0))
        e2e = ttfa + 500.0
        ok.append(make_timing(ttft_ms=ttft, ttfa_ms=ttfa, e2e_ms=e2e, tpot_ms=float(rng.uniform(5, 15))))
    # An error storm: 429s in 3 ms and timeouts at 60 s, some after a first token.
    failed = [
        make_timing(status="error", error_kind="http_429", ttft_ms=None, e2e_ms=3.0, tpot_ms=None, cost_usd=0.0)
        for _ in range(300)
    ] + [
        make_timing(status="error", error_kind="timeout", ttft_ms=1.0, ttfa_ms=2.0, e2e_ms=60_000.0, tpot_ms=900.0)
        for _ in range(100)
    ]
    mixed, ok_only = PaneAccumulator(), PaneAccumulator()
    for event in [*ok, *failed]:
        mixed.add(event)
    for event in ok:
        ok_only.add(event)
    key = StatsKey("simulated", "sim-small", "chat", "local")
    both = window_stats(key, "1m", 0, 60 * S, [mixed])
    alone = window_stats(key, "1m", 0, 60 * S, [ok_only])

    assert (both.count, both.error_count, both.error_rate) == (800, 400, 0.5)
    assert (both.ttft_ms, both.ttfa_ms, both.e2e_ms, both.tpot_ms) == (
        alone.ttft_ms,
        alone.ttfa_ms,
        alone.e2e_ms,
        alone.tpot_ms,
    )
    for name in ("ttft_ms", "ttfa_ms", "e2e_ms", "tpot_ms"):
        values = [getattr(e, name) for e in ok]
        quantiles = getattr(both, name)
        assert quantiles is not None
        for q, estimate in ((0.5, quantiles.p50), (0.95, quantiles.p95), (0.99, quantiles.p99)):
            assert within(estimate, values, q), (name, q)
        assert quantiles.max == pytest.approx(max(values))
    assert both.cost_usd == pytest.approx(sum(e.cost_usd for e in [*ok, *failed]))


def test_cache_hit_ratio_and_reasoning_share_add_up_across_panes() -> None:
    first, second = PaneAccumulator(), PaneAccumulator()
    first.add(make_timing(prompt_tokens=1000, cached_prompt_tokens=900, completion_tokens=100, reasoning_tokens=80))
    second.add(make_timing(prompt_tokens=1000, cached_prompt_tokens=100, completion_tokens=300, reasoning_tokens=0))
    restored = PaneAccumulator.from_state(second.to_state())
    stats = window_stats(StatsKey("p", "m", "w", None), "5m", 0, 300 * S, [first, restored])
    assert (stats.cached_prompt_tokens, stats.reasoning_tokens) == (1000, 80)
    assert stats.cache_hit_ratio == pytest.approx(0.5) and stats.reasoning_share == pytest.approx(0.2)


def test_a_pane_state_written_before_ttfa_existed_reads_back() -> None:
    pane = PaneAccumulator()
    pane.add(make_timing())
    state = pane.to_state()
    for name in ("ttfa_ms", "cached_prompt_tokens", "reasoning_tokens"):
        del state[name]
    restored = PaneAccumulator.from_state(state)
    assert (restored.count, restored.cached_prompt_tokens, restored.ttfa_ms.quantiles()) == (1, 0, None)

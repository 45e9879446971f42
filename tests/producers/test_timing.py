"""Timing maths with a fake clock: TTFT, e2e, ITL, TPOT, decode rate, tokens and cost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpulse.producers.stream import StreamChunk, StreamRecorder, Usage
from tokenpulse.producers.timing import Prices, compute_metrics, estimate_tokens, percentile
from tokenpulse.testing import FakeClock

MS = 1_000_000


def recorded(steps: list[tuple[float, str, Usage | None]]) -> tuple[int, int, list[StreamChunk]]:
    """Send at t0, then each (ms after previous, delta, usage) chunk; end 1 ms after the last."""
    clock = FakeClock()
    recorder = StreamRecorder(clock.monotonic_ns)
    sent = recorder.mark_sent()
    for after_ms, delta, usage in steps:
        clock.advance(ms=after_ms)
        recorder.add(delta, usage)
    clock.advance(ms=1)
    recorder.finish()
    assert recorder.finished_ns is not None
    return sent, recorder.finished_ns, recorder.chunks


def test_ttft_ignores_role_only_and_empty_chunks() -> None:
    sent, end, chunks = recorded([(50, "", None), (30, "", None), (20, "Hello", None), (10, " world", None)])
    m = compute_metrics(sent, end, chunks, prompt_text="hi", prices=Prices())
    assert m.ttft_ms == pytest.approx(100.0)
    assert m.e2e_ms == pytest.approx(111.0)


def test_itl_tpot_and_decode_rate_from_usage() -> None:
    gaps = [10, 20, 30, 40]
    steps: list[tuple[float, str, Usage | None]] = [(100, "a", None)]
    steps += [(g, "b", None) for g in gaps]
    steps.append((0, "", Usage(prompt_tokens=12, completion_tokens=5)))
    sent, end, chunks = recorded(steps)
    m = compute_metrics(sent, end, chunks, prompt_text="x", prices=Prices(1.0, 2.0))
    assert m.ttft_ms == pytest.approx(100.0)
    assert m.e2e_ms == pytest.approx(201.0)
    assert m.itl_p50_ms == pytest.approx(25.0)
    assert m.itl_p95_ms == pytest.approx(38.5)
    assert m.itl_max_ms == pytest.approx(40.0)
    assert m.tpot_ms == pytest.approx((201.0 - 100.0) / 4)
    assert m.decode_tps == pytest.approx(4 / 0.101)
    assert (m.prompt_tokens, m.completion_tokens, m.token_count_source) == (12, 5, "usage")
    assert m.cost_usd == pytest.approx((12 * 1.0 + 5 * 2.0) / 1e6)


def test_estimated_tokens_when_no_usage() -> None:
    sent, end, chunks = recorded([(5, "abcdefgh", None), (5, "ij", None)])
    m = compute_metrics(sent, end, chunks, prompt_text="x" * 40, prices=Prices())
    assert m.token_count_source == "estimated"
    assert m.prompt_tokens == 10
    assert m.completion_tokens == 3  # ceil(10 chars / 4)


def test_estimate_counts_at_least_one_token_per_content_chunk() -> None:
    sent, end, chunks = recorded([(5, "a", None), (5, "b", None), (5, "c", None)])
    assert compute_metrics(sent, end, chunks, prompt_text="", prices=Prices()).completion_tokens == 3


def test_no_content_means_no_ttft_and_no_decode_figures() -> None:
    sent, end, chunks = recorded([(5, "", None)])
    m = compute_metrics(sent, end, chunks, prompt_text="", prices=Prices())
    assert m.ttft_ms is None and m.tpot_ms is None and m.decode_tps is None and m.itl_p50_ms is None
    assert m.e2e_ms == pytest.approx(6.0)


def test_single_token_has_no_tpot() -> None:
    sent, end, chunks = recorded([(5, "a", Usage(1, 1))])
    m = compute_metrics(sent, end, chunks, prompt_text="", prices=Prices())
    assert m.ttft_ms == pytest.approx(5.0) and m.tpot_ms is None and m.itl_p95_ms is None


def test_end_before_send_is_a_bug() -> None:
    with pytest.raises(ValueError, match="monotonic"):
        compute_metrics(10, 5, [], prompt_text="", prices=Prices())


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcde") == 2


@given(st.lists(st.tuples(st.integers(0, 10**9), st.text(max_size=3)), max_size=30), st.integers(0, 10**9))
def test_metrics_are_consistent_for_any_stream(steps: list[tuple[int, str]], tail_ns: int) -> None:
    t = 1_000
    chunks = []
    for gap, delta in steps:
        t += gap
        chunks.append(StreamChunk(t, delta))
    m = compute_metrics(1_000, t + tail_ns, chunks, prompt_text="p", prices=Prices(0.5, 1.5))
    assert m.e2e_ms >= 0
    if m.ttft_ms is not None:
        assert 0 <= m.ttft_ms <= m.e2e_ms
    for value in (m.itl_p50_ms, m.itl_p95_ms, m.itl_max_ms, m.tpot_ms, m.decode_tps):
        assert value is None or value >= 0
    if m.itl_p50_ms is not None:
        assert m.itl_p50_ms <= m.itl_p95_ms <= m.itl_max_ms  # type: ignore[operator]


def test_the_issues_reasoning_stream_gives_the_true_ttft_tpot_and_decode_rate() -> None:
    """60 reasoning tokens (the first 100 ms after the request, then every 10 ms), then 20 answer tokens."""
    clock = FakeClock()
    recorder = StreamRecorder(clock.monotonic_ns)
    sent = recorder.mark_sent()
    clock.advance(ms=100)
    for i in range(80):
        if i:
            clock.advance(ms=10)
        recorder.add("w" if i >= 60 else "", reasoning="" if i >= 60 else "r")
    recorder.add("", Usage(12, 80, 0, 60))
    recorder.finish()
    assert recorder.finished_ns is not None
    m = compute_metrics(sent, recorder.finished_ns, recorder.chunks, prompt_text="", prices=Prices())
    assert m.ttft_ms == pytest.approx(100.0) and m.ttfa_ms == pytest.approx(700.0)
    assert m.reasoning_ms == pytest.approx(600.0)
    assert m.tpot_ms == pytest.approx(10.0) and m.decode_tps == pytest.approx(100.0)
    assert m.itl_p50_ms == pytest.approx(10.0) and m.reasoning_tokens == 60


def test_cost_prices_cached_input_and_reasoning_output_separately() -> None:
    sent, end, chunks = recorded([(5, "a", None), (5, "b", Usage(1000, 300, 800, 200))])
    chunks = [c if c.delta != "a" else type(c)(c.t_ns, "", None, "think") for c in chunks]
    m = compute_metrics(sent, end, chunks, prompt_text="", prices=Prices(1.0, 4.0, 0.25, 5.0))
    assert (m.cached_prompt_tokens, m.reasoning_tokens) == (800, 200)
    assert m.cost_usd == pytest.approx((200 * 1.0 + 800 * 0.25 + 100 * 4.0 + 200 * 5.0) / 1e6, rel=1e-12)
    default = compute_metrics(sent, end, chunks, prompt_text="", prices=Prices(1.0, 4.0))
    assert default.cost_usd == pytest.approx((1000 * 1.0 + 300 * 4.0) / 1e6, rel=1e-12)


def test_no_usage_and_no_output_is_free_but_output_without_usage_is_charged_on_the_estimate() -> None:
    sent, end, chunks = recorded([(5, "", None)])
    free = compute_metrics(sent, end, chunks, prompt_text="x" * 400, prices=Prices(1.0, 2.0))
    assert (free.cost_usd, free.prompt_tokens, free.completion_tokens, free.token_count_source) == (
        0.0,
        0,
        0,
        "estimated",
    )
    sent, end, chunks = recorded([(5, "abcd", None)])
    cut = compute_metrics(sent, end, chunks, prompt_text="x" * 400, prices=Prices(1.0, 2.0))
    assert (cut.prompt_tokens, cut.completion_tokens, cut.token_count_source) == (100, 1, "estimated")
    assert cut.cost_usd == pytest.approx((100 * 1.0 + 1 * 2.0) / 1e6)

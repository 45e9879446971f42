"""The probe's running summary: sketches and counters, so its memory does not grow with the run."""

from __future__ import annotations

import random
import sys

from tokenpulse.producers.probe import EndpointSummary
from tokenpulse.testing.sinks import make_timing


def sketch_bins(summary: EndpointSummary) -> int:
    return sum(len(s._store.bins) + len(s._negative_store.bins) for s in (summary.ttft_ms, summary.schedule_lag_ms))


def test_summary_size_stays_flat_over_many_requests_and_quantiles_are_within_one_percent() -> None:
    rng = random.Random(0)
    summary = EndpointSummary("e")
    ttfts: list[float] = []

    def feed(n: int) -> None:
        for _ in range(n):
            ttft = rng.lognormvariate(4.0, 0.5)
            ttfts.append(ttft)
            summary.add(make_timing(ttft_ms=ttft, e2e_ms=ttft + 50, schedule_lag_ms=rng.random(), decode_tps=100.0))

    feed(2_000)
    bins_early = sketch_bins(summary)
    feed(48_000)
    assert sketch_bins(summary) <= bins_early + 200  # a few more bins at the tails, not one per request
    figures = summary.refresh()
    assert figures.requests == 50_000
    true_p95 = sorted(ttfts)[int(0.95 * len(ttfts))]
    assert figures.ttft_p95_ms is not None and abs(figures.ttft_p95_ms - true_p95) <= 0.02 * true_p95
    assert sys.getsizeof(summary.error_kinds) < 10_000

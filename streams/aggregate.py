"""Per-pane accumulators and the ``WindowStats`` built from the panes of one window.

A ``PaneAccumulator`` follows the quix-streams aggregator shape: it is *initialised* empty, *agg*regates
one ``RequestTiming`` at a time (``add``) or another accumulator (``merge``), and its *result* for a
window is ``window_stats``. Counts and sums are exact; latencies and decode speed go into DDSketches, for
successful requests only: a failed request's duration (a 429 in 3 ms, a timeout at 60 s) says how it failed,
not how fast the provider serves, so an error storm cannot make a provider look faster. Errors are counted
and rated on their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from tokenpulse.durations import NANOS_PER_SECOND
from tokenpulse.schemas import RequestTiming, WindowStats
from tokenpulse.streams.sketch import QuantileSketch

THIRTY_DAYS_S = 30 * 86_400


class StatsKey(NamedTuple):
    """What a window aggregates over: one provider/model/workload/region."""

    provider: str
    model: str
    workload: str
    region: str | None

    @classmethod
    def of(cls, event: RequestTiming) -> StatsKey:
        return cls(event.provider, event.model, event.workload, event.region)


class PaneAccumulator:
    """Exact counts and sums plus one sketch per latency metric, for the events of one key in one pane.

    ``late_events`` holds, per window spec label, events dropped as too late while this pane was the last
    pane of that spec's oldest open window (so each late event is counted in exactly one window per spec).
    """

    __slots__ = (
        "cached_prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "count",
        "decode_tps",
        "e2e_ms",
        "error_count",
        "late_events",
        "prompt_tokens",
        "reasoning_tokens",
        "server_cached_tokens",
        "server_decode_ms",
        "server_prefill_ms",
        "tpot_ms",
        "ttfa_ms",
        "ttft_ms",
    )

    def __init__(self) -> None:
        self.count = 0
        self.error_count = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_prompt_tokens = 0
        self.reasoning_tokens = 0
        self.cost_usd = 0.0
        self.ttft_ms = QuantileSketch()
        self.ttfa_ms = QuantileSketch()
        self.e2e_ms = QuantileSketch()
        self.tpot_ms = QuantileSketch()
        self.decode_tps = QuantileSketch()
        self.server_prefill_ms = QuantileSketch()
        self.server_decode_ms = QuantileSketch()
        self.server_cached_tokens = QuantileSketch()
        self.late_events: dict[str, int] = {}

    def add(self, event: RequestTiming) -> None:
        self.count += 1
        self.prompt_tokens += event.prompt_tokens
        self.completion_tokens += event.completion_tokens
        self.cached_prompt_tokens += event.cached_prompt_tokens
        self.reasoning_tokens += event.reasoning_tokens
        self.cost_usd += event.cost_usd
        if event.status == "error":
            self.error_count += 1
            return
        self.e2e_ms.add(event.e2e_ms)
        if event.ttft_ms is not None:
            self.ttft_ms.add(event.ttft_ms)
        if event.ttfa_ms is not None:
            self.ttfa_ms.add(event.ttfa_ms)
        if event.tpot_ms is not None:
            self.tpot_ms.add(event.tpot_ms)
        if event.decode_tps is not None:
            self.decode_tps.add(event.decode_tps)
        if event.server_prefill_ms is not None:
            self.server_prefill_ms.add(event.server_prefill_ms)
        if event.server_decode_ms is not None:
            self.server_decode_ms.add(event.server_decode_ms)
        if event.server_cached_tokens is not None:
            self.server_cached_tokens.add(event.server_cached_tokens)

    def add_late(self, window_label: str) -> None:
        self.late_events[window_label] = self.late_events.get(window_label, 0) + 1

    def merge(self, other: PaneAccumulator) -> None:
        """Add ``other``'s events to this accumulator (late counts are per pane and are not merged)."""
        self.count += other.count
        self.error_count += other.error_count
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd
        self.ttft_ms.merge(other.ttft_ms)
        self.ttfa_ms.merge(other.ttfa_ms)
        self.e2e_ms.merge(other.e2e_ms)
        self.tpot_ms.merge(other.tpot_ms)
        self.decode_tps.merge(other.decode_tps)
        self.server_prefill_ms.merge(other.server_prefill_ms)
        self.server_decode_ms.merge(other.server_decode_ms)
        self.server_cached_tokens.merge(other.server_cached_tokens)

    def to_state(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.error_count,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "ttft_ms": self.ttft_ms.to_state(),
            "ttfa_ms": self.ttfa_ms.to_state(),
            "e2e_ms": self.e2e_ms.to_state(),
            "tpot_ms": self.tpot_ms.to_state(),
            "decode_tps": self.decode_tps.to_state(),
            "server_prefill_ms": self.server_prefill_ms.to_state(),
            "server_decode_ms": self.server_decode_ms.to_state(),
            "server_cached_tokens": self.server_cached_tokens.to_state(),
            "late": self.late_events,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PaneAccumulator:
        """The pane of ``to_state``; a state written before ``ttfa_ms`` and the token details existed reads
        back with them empty."""
        pane = cls()
        pane.count = state["count"]
        pane.error_count = state["errors"]
        pane.prompt_tokens = state["prompt_tokens"]
        pane.completion_tokens = state["completion_tokens"]
        pane.cached_prompt_tokens = state.get("cached_prompt_tokens", 0)
        pane.reasoning_tokens = state.get("reasoning_tokens", 0)
        pane.cost_usd = state["cost_usd"]
        pane.ttft_ms = QuantileSketch.from_state(state["ttft_ms"])
        if "ttfa_ms" in state:
            pane.ttfa_ms = QuantileSketch.from_state(state["ttfa_ms"])
        pane.e2e_ms = QuantileSketch.from_state(state["e2e_ms"])
        pane.tpot_ms = QuantileSketch.from_state(state["tpot_ms"])
        pane.decode_tps = QuantileSketch.from_state(state["decode_tps"])
        pane.late_events = dict(state["late"])
        for name in ("server_prefill_ms", "server_decode_ms", "server_cached_tokens"):
            if name in state:  # state written before these sketches existed has none
                setattr(pane, name, QuantileSketch.from_state(state[name]))
        return pane


def window_stats(
    key: StatsKey,
    window_label: str,
    start_ns: int,
    end_ns: int,
    panes: Iterable[PaneAccumulator],
    late_events: int = 0,
) -> WindowStats:
    """The ``WindowStats`` of one window from the accumulators of its panes (empty panes are fine)."""
    total = PaneAccumulator()
    for pane in panes:
        total.merge(pane)
    tokens = total.prompt_tokens + total.completion_tokens
    duration_s = (end_ns - start_ns) / NANOS_PER_SECOND
    decode_p50 = total.decode_tps.quantile(0.5)
    return WindowStats(
        provider=key.provider,
        model=key.model,
        workload=key.workload,
        region=key.region,
        window=window_label,
        window_start=start_ns,
        window_end=end_ns,
        count=total.count,
        error_count=total.error_count,
        error_rate=total.error_count / total.count if total.count else 0.0,
        ttft_ms=total.ttft_ms.quantiles(),
        ttfa_ms=total.ttfa_ms.quantiles(),
        e2e_ms=total.e2e_ms.quantiles(),
        tpot_ms=total.tpot_ms.quantiles(),
        decode_tps_p50=decode_p50,
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        cached_prompt_tokens=total.cached_prompt_tokens,
        reasoning_tokens=total.reasoning_tokens,
        cache_hit_ratio=total.cached_prompt_tokens / total.prompt_tokens if total.prompt_tokens else None,
        reasoning_share=total.reasoning_tokens / total.completion_tokens if total.completion_tokens else None,
        cost_usd=total.cost_usd,
        cost_per_1k_tokens=total.cost_usd * 1000 / tokens if tokens else None,
        projected_30d_cost_usd=total.cost_usd * THIRTY_DAYS_S / duration_s,
        late_events=late_events,
        server_prefill_ms_p95=total.server_prefill_ms.quantile(0.95),
        server_decode_ms_p95=total.server_decode_ms.quantile(0.95),
        server_cached_tokens_p95=total.server_cached_tokens.quantile(0.95),
    )

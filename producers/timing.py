"""Pure timing maths of one streamed request: TTFT, e2e, inter-token latency, TPOT, decode rate, cost.

Inputs are monotonic nanosecond timestamps; nothing here reads a clock or does I/O.

Definitions (shared with vLLM ``bench serve`` and GuideLLM):
- TTFT: request sent to the first chunk with non-empty content; role-only and empty chunks do not count.
- e2e: request sent to the end of the stream.
- ITL: every gap between consecutive content chunks, summarised as p50/p95/max.
- TPOT: (e2e - ttft) / (completion_tokens - 1); decode tokens/s is (completion_tokens - 1) / (e2e - ttft).
- Token counts come from the server's ``usage`` when present, else they are estimated (about four
  characters per token, and at least one per content chunk).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tokenpulse.producers.stream import StreamChunk, Usage

NS_PER_MS = 1_000_000
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """The timing part of a ``RequestTiming`` event, in milliseconds and tokens."""

    ttft_ms: float | None
    e2e_ms: float
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    itl_max_ms: float | None
    tpot_ms: float | None
    decode_tps: float | None
    prompt_tokens: int
    completion_tokens: int
    token_count_source: Literal["usage", "estimated"]
    cost_usd: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of already sorted values, like numpy's default."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate: about four characters per token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def last_usage(chunks: Sequence[StreamChunk]) -> Usage | None:
    """The usage of the last chunk that carried one (servers send it with or after the final delta)."""
    for chunk in reversed(chunks):
        if chunk.usage is not None:
            return chunk.usage
    return None


def compute_metrics(
    sent_ns: int,
    end_ns: int,
    chunks: Sequence[StreamChunk],
    *,
    prompt_text: str,
    prices: Prices,
) -> RequestMetrics:
    """Metrics of one request from its send time, end time and received chunks (in arrival order)."""
    return compute_metrics_columns(
        sent_ns,
        end_ns,
        [c.t_ns for c in chunks],
        [c.delta for c in chunks],
        last_usage(chunks),
        prompt_text=prompt_text,
        prices=prices,
    )


def compute_metrics_columns(
    sent_ns: int,
    end_ns: int,
    times_ns: Sequence[int],
    deltas: Sequence[str],
    usage: Usage | None,
    *,
    prompt_text: str,
    prices: Prices,
) -> RequestMetrics:
    """``compute_metrics`` over chunks given column-wise (arrival times, text deltas) and the last usage."""
    if end_ns < sent_ns:
        raise ValueError(f"end_ns ({end_ns}) is before sent_ns ({sent_ns}): use one monotonic clock for both")
    if len(times_ns) != len(deltas):
        raise ValueError(f"{len(times_ns)} chunk times but {len(deltas)} deltas: one of each per chunk")
    content_times = [t for t, delta in zip(times_ns, deltas, strict=True) if delta]
    e2e_ns = end_ns - sent_ns
    ttft_ns = content_times[0] - sent_ns if content_times else None
    if ttft_ns is not None and ttft_ns > e2e_ns:
        e2e_ns = ttft_ns  # the stream ended at the first token; keep ttft <= e2e exact
    gaps_ms = sorted([(b - a) / NS_PER_MS for a, b in itertools.pairwise(content_times)])

    if usage is not None:
        prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        source: Literal["usage", "estimated"] = "usage"
    else:
        text = "".join(deltas)
        prompt_tokens = estimate_tokens(prompt_text)
        completion_tokens = max(estimate_tokens(text), len(content_times))
        source = "estimated"

    tpot_ms: float | None = None
    decode_tps: float | None = None
    if ttft_ns is not None and completion_tokens > 1:
        decode_ns = e2e_ns - ttft_ns
        tpot_ms = decode_ns / NS_PER_MS / (completion_tokens - 1)
        if decode_ns > 0:
            decode_tps = (completion_tokens - 1) / (decode_ns / 1e9)

    cost_usd = (prompt_tokens * prices.input_per_mtok + completion_tokens * prices.output_per_mtok) / 1e6
    return RequestMetrics(
        ttft_ms=ttft_ns / NS_PER_MS if ttft_ns is not None else None,
        e2e_ms=e2e_ns / NS_PER_MS,
        itl_p50_ms=percentile(gaps_ms, 50) if gaps_ms else None,
        itl_p95_ms=percentile(gaps_ms, 95) if gaps_ms else None,
        itl_max_ms=gaps_ms[-1] if gaps_ms else None,
        tpot_ms=tpot_ms,
        decode_tps=decode_tps,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        token_count_source=source,
        cost_usd=cost_usd,
    )

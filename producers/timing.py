"""Pure timing maths of one streamed request: TTFT, TTFA, e2e, inter-token latency, TPOT, decode rate, cost.

Inputs are monotonic nanosecond timestamps; nothing here reads a clock or does I/O.

Every kind of output token counts as output: reasoning (``delta.reasoning_content`` / ``delta.reasoning``),
answer content (``delta.content``) and tool calls (``delta.tool_calls``). Definitions, as in AIPerf and
vLLM's ``bench serve``:
- TTFT: request sent to the first chunk with output of any kind; role-only, empty and usage-only chunks do
  not count (AIPerf ``time_to_first_token``, OTel ``gen_ai.client.operation.time_to_first_chunk``).
- TTFA: request sent to the first answer chunk, content or a tool-call fragment (AIPerf
  ``time_to_first_output``, GuideLLM ``time_to_first_output_token``); equals TTFT without a reasoning phase.
- reasoning: first reasoning chunk to the first answer chunk (null without either).
- e2e: request sent to the end of the stream.
- ITL: every gap between consecutive output chunks, summarised as p50/p95/max.
- TPOT: (e2e - ttft) / (completion_tokens - 1); decode tokens/s is (completion_tokens - 1) / (e2e - ttft),
  over all output tokens, reasoning included.
- Token counts come from the server's ``usage`` when present (reasoning and cached prompt tokens from its
  details), else they are estimated (about four characters per token, and at least one per output chunk).
  A request without usage and without any output is charged nothing and counts no tokens.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tokenpulse.producers.stream import StreamChunk, Usage

NS_PER_MS = 1_000_000
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens; cached input defaults to the input price, reasoning output to the output price."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None
    reasoning_output_per_mtok: float | None = None

    @property
    def cached_input(self) -> float:
        return self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok

    @property
    def reasoning_output(self) -> float:
        return self.output_per_mtok if self.reasoning_output_per_mtok is None else self.reasoning_output_per_mtok

    def cost_usd(self, prompt_tokens: int, cached_prompt: int, completion_tokens: int, reasoning: int) -> float:
        """Uncached input + cached input + answer output + reasoning output, each at its price."""
        cached = min(cached_prompt, prompt_tokens)
        thought = min(reasoning, completion_tokens)
        return (
            (prompt_tokens - cached) * self.input_per_mtok
            + cached * self.cached_input
            + (completion_tokens - thought) * self.output_per_mtok
            + thought * self.reasoning_output
        ) / 1e6


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """The timing part of a ``RequestTiming`` event, in milliseconds and tokens."""

    ttft_ms: float | None
    ttfa_ms: float | None
    reasoning_ms: float | None
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
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: int = 0


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


def split_reasoning_tokens(
    completion_tokens: int, reasoning_text: str, answer_text: str, reasoning_chunks: int, answer_chunks: int
) -> int:
    """The reasoning part of a server's ``completion_tokens`` when its usage has no reasoning details.

    Split in proportion to the estimated tokens of each text, but at least one per reasoning chunk and at
    most ``completion_tokens`` less one per answer chunk: exact for the usual one token per chunk.
    """
    if reasoning_chunks == 0:
        return 0
    reasoning_estimate = estimate_tokens(reasoning_text)
    total_estimate = reasoning_estimate + estimate_tokens(answer_text)
    share = round(completion_tokens * reasoning_estimate / total_estimate) if total_estimate else 0
    upper = max(0, completion_tokens - answer_chunks)
    return min(max(share, reasoning_chunks), upper, completion_tokens)


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
        reasoning=[c.reasoning for c in chunks],
        tool_chunks={i: c.tool_call_indexes for i, c in enumerate(chunks) if c.tool_call_indexes},
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
    reasoning: Sequence[str] | None = None,
    tool_chunks: Mapping[int, Sequence[int]] | None = None,
) -> RequestMetrics:
    """``compute_metrics`` over chunks given column-wise: arrival times, answer text, the last usage, and
    optionally reasoning text per chunk and the tool-call indexes of the chunks that carried a fragment."""
    if end_ns < sent_ns:
        raise ValueError(f"end_ns ({end_ns}) is before sent_ns ({sent_ns}): use one monotonic clock for both")
    if len(times_ns) != len(deltas):
        raise ValueError(f"{len(times_ns)} chunk times but {len(deltas)} deltas: one of each per chunk")
    if reasoning is not None and len(reasoning) != len(deltas):
        raise ValueError(f"{len(deltas)} deltas but {len(reasoning)} reasoning texts: one of each per chunk")
    tools = tool_chunks or {}
    output_times: list[int] = []
    first_answer_ns: int | None = None
    first_reasoning_ns: int | None = None
    reasoning_chunks = answer_chunks = 0
    for i, (t, delta) in enumerate(zip(times_ns, deltas, strict=True)):
        thought = reasoning[i] if reasoning is not None else ""
        answer = bool(delta) or i in tools
        if thought:
            reasoning_chunks += 1
            if first_reasoning_ns is None:
                first_reasoning_ns = t
        if answer:
            answer_chunks += 1
            if first_answer_ns is None:
                first_answer_ns = t
        if answer or thought:
            output_times.append(t)
    e2e_ns = end_ns - sent_ns
    ttft_ns = output_times[0] - sent_ns if output_times else None
    if ttft_ns is not None and output_times[-1] - sent_ns > e2e_ns:
        e2e_ns = output_times[-1] - sent_ns  # the stream ended at its last token; keep every duration <= e2e
    ttfa_ns = first_answer_ns - sent_ns if first_answer_ns is not None else None
    reasoning_ns = (
        first_answer_ns - first_reasoning_ns
        if first_answer_ns is not None and first_reasoning_ns is not None and first_reasoning_ns <= first_answer_ns
        else None
    )
    gaps_ms = sorted([(b - a) / NS_PER_MS for a, b in itertools.pairwise(output_times)])
    tool_calls = len({index for indexes in tools.values() for index in indexes})

    reasoning_text = "".join(reasoning) if reasoning is not None else ""
    if usage is not None:
        prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        cached_prompt_tokens = min(usage.cached_prompt_tokens or 0, prompt_tokens)
        if usage.reasoning_tokens is not None:
            reasoning_tokens = min(usage.reasoning_tokens, completion_tokens)
        else:
            reasoning_tokens = split_reasoning_tokens(
                completion_tokens, reasoning_text, "".join(deltas), reasoning_chunks, answer_chunks
            )
        source: Literal["usage", "estimated"] = "usage"
    elif output_times:
        reasoning_tokens = max(estimate_tokens(reasoning_text), reasoning_chunks)
        answer_tokens = max(estimate_tokens("".join(deltas)), answer_chunks)
        prompt_tokens = estimate_tokens(prompt_text)
        completion_tokens = reasoning_tokens + answer_tokens
        cached_prompt_tokens = 0
        source = "estimated"
    else:
        # Nothing came back and the server reported nothing: nothing was billed (a 429, a 5xx, a timeout).
        prompt_tokens = completion_tokens = cached_prompt_tokens = reasoning_tokens = 0
        source = "estimated"

    tpot_ms: float | None = None
    decode_tps: float | None = None
    if ttft_ns is not None and completion_tokens > 1:
        decode_ns = e2e_ns - ttft_ns
        tpot_ms = decode_ns / NS_PER_MS / (completion_tokens - 1)
        if decode_ns > 0:
            decode_tps = (completion_tokens - 1) / (decode_ns / 1e9)

    return RequestMetrics(
        ttft_ms=ttft_ns / NS_PER_MS if ttft_ns is not None else None,
        ttfa_ms=ttfa_ns / NS_PER_MS if ttfa_ns is not None else None,
        reasoning_ms=reasoning_ns / NS_PER_MS if reasoning_ns is not None else None,
        e2e_ms=e2e_ns / NS_PER_MS,
        itl_p50_ms=percentile(gaps_ms, 50) if gaps_ms else None,
        itl_p95_ms=percentile(gaps_ms, 95) if gaps_ms else None,
        itl_max_ms=gaps_ms[-1] if gaps_ms else None,
        tpot_ms=tpot_ms,
        decode_tps=decode_tps,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        token_count_source=source,
        cost_usd=prices.cost_usd(prompt_tokens, cached_prompt_tokens, completion_tokens, reasoning_tokens),
        cached_prompt_tokens=cached_prompt_tokens,
        reasoning_tokens=reasoning_tokens,
        tool_calls=tool_calls,
    )

"""Chunks of every output kind: the parser's errors name the field; properties of the recorder's figures."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from cerebras.cloud.sdk._models import construct_type
from cerebras.cloud.sdk.types.chat.chat_completion import ChatChunkResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpulse.producers.adapters.cerebras import chunk_document
from tokenpulse.producers.adapters.openai import parse_chunk_payload
from tokenpulse.producers.chunks import InvalidChunk, ParsedChunk, parse_chunk_document
from tokenpulse.producers.errors import ProbeFailure
from tokenpulse.producers.stream import StreamRecorder, Usage
from tokenpulse.producers.timing import Prices, compute_metrics, estimate_tokens
from tokenpulse.testing import FakeClock


def delta_chunk(**delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta}]}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (delta_chunk(reasoning=5), "choices[0].delta.reasoning"),
        (delta_chunk(reasoning_content=["a"]), "choices[0].delta.reasoning_content"),
        (delta_chunk(content={"text": "a"}), "choices[0].delta.content"),
        (delta_chunk(tool_calls=[{"function": {"name": "f"}}]), "choices[0].delta.tool_calls[0].index"),
        (delta_chunk(tool_calls=[{"index": "0"}]), "choices[0].delta.tool_calls[0].index"),
        (delta_chunk(tool_calls={"index": 0}), "choices[0].delta.tool_calls"),
        (delta_chunk(tool_calls=[{"index": 0, "function": {"arguments": 3}}]), "tool_calls[0].function.arguments"),
        (
            {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": "3"}},
            "usage.prompt_tokens_details",
        ),
        (
            {"usage": {"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": "3"}}},
            "usage.prompt_tokens_details.cached_tokens",
        ),
        (
            {
                "usage": {
                    "prompt_tokens": 1,
                    "completion_tokens": 2,
                    "completion_tokens_details": {"reasoning_tokens": -1},
                }
            },
            "usage.completion_tokens_details.reasoning_tokens",
        ),
        ({"usage": {"prompt_tokens": 1.5, "completion_tokens": 2}}, "usage.prompt_tokens"),
        ({"usage": [1, 2]}, "usage"),
        ({"choices": {"0": {}}}, "choices"),
    ],
)
def test_bad_fields_are_invalid_response_naming_the_field(document: dict[str, Any], field: str) -> None:
    with pytest.raises(ProbeFailure) as info:
        parse_chunk_payload(orjson.dumps(document).decode())
    assert info.value.kind == "invalid_response"
    assert field in info.value.detail


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (delta_chunk(reasoning=5), "choices[0].delta.reasoning"),
        (delta_chunk(tool_calls=[{"function": {"name": "f", "arguments": "{"}}]), "tool_calls[0].index"),
        (
            {
                "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": "x"}},
            },
            "usage.prompt_tokens_details.cached_tokens",
        ),
    ],
)
def test_the_cerebras_sdks_chunks_are_checked_the_same_way(raw: dict[str, Any], field: str) -> None:
    sdk_chunk = construct_type(value={"id": "x", "object": "chat.completion.chunk", **raw}, type_=ChatChunkResponse)
    with pytest.raises(InvalidChunk, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_chunk_document(chunk_document(sdk_chunk))


def test_the_cerebras_sdks_chunks_carry_every_output_kind() -> None:
    raw = {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [
            {"index": 0, "delta": {"reasoning": "hm", "tool_calls": [{"index": 1, "function": {"name": "f"}}]}}
        ],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    parsed = parse_chunk_document(chunk_document(construct_type(value=raw, type_=ChatChunkResponse)))
    assert parsed == ParsedChunk("f", "hm", (1,), Usage(9, 4, 8, 2))


def test_reasoning_content_wins_over_a_repeated_reasoning_field() -> None:
    assert parse_chunk_document(delta_chunk(reasoning_content="a", reasoning="a")).reasoning == "a"


# -- properties over chunk sequences mixing the three delta kinds, empty deltas and usage chunks ----------

WORD = st.text(alphabet="abcdefgh ", min_size=1, max_size=4)  # at most one estimated token each
CHUNK = st.one_of(
    st.builds(lambda w: delta_chunk(content=w), WORD),
    st.builds(lambda w: delta_chunk(reasoning_content=w), WORD),
    st.builds(lambda w: delta_chunk(reasoning=w), WORD),
    st.builds(
        lambda i, w: delta_chunk(tool_calls=[{"index": i, "function": {"arguments": w}}]), st.integers(0, 3), WORD
    ),
    st.just(delta_chunk(role="assistant", content="")),
    st.just(delta_chunk()),
    st.just({"choices": []}),
    st.just({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
)
USAGE = st.builds(
    lambda p, c, cached, r: {
        "choices": [],
        "usage": {
            "prompt_tokens": p,
            "completion_tokens": c,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": r},
        },
    },
    st.integers(0, 500),
    st.integers(0, 500),
    st.integers(0, 600),
    st.integers(0, 600),
)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.tuples(st.floats(0, 50, allow_nan=False), CHUNK), max_size=40),
    usage=st.none() | USAGE,
    tail_ms=st.floats(0, 20, allow_nan=False),
)
def test_recorder_figures_hold_together(
    chunks: list[tuple[float, dict[str, Any]]], usage: dict[str, Any] | None, tail_ms: float
) -> None:
    clock = FakeClock()
    recorder = StreamRecorder(clock.monotonic_ns)
    sent = recorder.mark_sent()
    documents = [document for _, document in chunks] + ([usage] if usage is not None else [])
    for after_ms, document in [*chunks, *([(0.0, usage)] if usage is not None else [])]:
        clock.advance(ms=after_ms)
        parsed = parse_chunk_payload(orjson.dumps(document).decode())
        recorder.add(
            parsed.content, parsed.usage, reasoning=parsed.reasoning, tool_call_indexes=parsed.tool_call_indexes
        )
    clock.advance(ms=tail_ms)
    recorder.finish()
    assert recorder.finished_ns is not None
    prices = Prices(1.0, 2.0, 0.5, 3.0)
    m = compute_metrics(sent, recorder.finished_ns, recorder.chunks, prompt_text="a prompt", prices=prices)

    output = [c for c in recorder.chunks if c.is_output]
    answers = [c for c in recorder.chunks if c.is_answer]
    assert (m.ttft_ms is None) == (not output)
    assert (m.ttfa_ms is None) == (not answers)
    durations = [m.ttft_ms, m.ttfa_ms, m.reasoning_ms, m.tpot_ms, m.itl_p50_ms, m.itl_p95_ms, m.itl_max_ms]
    assert all(d is None or d >= 0 for d in [*durations, m.decode_tps]) and m.e2e_ms >= 0
    if m.ttft_ms is not None and m.ttfa_ms is not None:
        assert m.ttft_ms <= m.ttfa_ms <= m.e2e_ms
    assert m.reasoning_tokens <= m.completion_tokens and m.cached_prompt_tokens <= m.prompt_tokens
    assert m.tool_calls == len({i for c in recorder.chunks for i in c.tool_call_indexes})
    assert m.cost_usd >= 0
    if usage is not None:
        assert m.token_count_source == "usage"
        assert (m.prompt_tokens, m.completion_tokens) == (
            usage["usage"]["prompt_tokens"],
            usage["usage"]["completion_tokens"],
        )
    else:
        assert m.token_count_source == "estimated"
        assert m.completion_tokens == len(output)  # one token per output chunk: never more than the chunks
        if not output:
            assert (m.prompt_tokens, m.cost_usd) == (0, 0.0)  # nothing came back, nothing is billed
        else:
            assert m.prompt_tokens == estimate_tokens("a prompt")
    assert len(documents) == len(recorder.chunks)

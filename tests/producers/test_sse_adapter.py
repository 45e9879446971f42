"""The OpenAI adapter's SSE handling over httpx's mock transport (no network)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from tokenpulse.producers.adapters.openai import OpenAIAdapter, parse_chunk_payload
from tokenpulse.producers.chunks import ParsedChunk
from tokenpulse.producers.errors import ProbeFailure
from tokenpulse.producers.stream import ChatRequest, StreamRecorder, Usage
from tokenpulse.testing import FakeClock
from tokenpulse.testing.adapters import stream_to_end

KEY = "sk-test-THIS-MUST-NEVER-LEAK-123"


def chunk(content: str | None = None, role: str | None = None) -> bytes:
    delta = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    import orjson

    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n'
DONE = b"data: [DONE]\n\n"


def transport_for(
    pieces: list[bytes],
    status: int = 200,
    headers: dict[str, str] | None = None,
    seen: list[httpx.Request] | None = None,
) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        merged = {"content-type": "text/event-stream", **(headers or {})}
        return httpx.Response(status, headers=merged, content=body())

    return httpx.MockTransport(handler)


def run(pieces: list[bytes], **kwargs: object) -> StreamRecorder:
    clock = FakeClock()
    recorder = StreamRecorder(clock.monotonic_ns)
    adapter = OpenAIAdapter("http://sim.test/v1", SecretStr(KEY), transport=transport_for(pieces, **kwargs))  # type: ignore[arg-type]
    request = ChatRequest(model="m", messages=({"role": "user", "content": "hi"},), max_tokens=8, request_id="r1")
    return stream_to_end(adapter, request, recorder)


def deltas(recorder: StreamRecorder) -> list[str]:
    return [c.delta for c in recorder.chunks]


def test_events_split_across_reads_are_reassembled() -> None:
    whole = chunk(role="assistant", content="") + chunk("Hel") + chunk("lo") + USAGE + DONE
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    recorder = run(pieces)
    assert deltas(recorder) == ["", "Hel", "lo", ""]
    assert recorder.chunks[-1].usage == Usage(7, 3)
    assert recorder.finished_ns is not None


def test_comments_keepalives_and_blank_data_are_ignored() -> None:
    pieces = [b": keep-alive\n\n", chunk("a"), b":ping\n\n", b"event: ping\ndata:\n\n", chunk("b"), DONE]
    assert deltas(run(pieces)) == ["a", "b"]


def test_multi_line_data_is_joined_per_the_sse_spec() -> None:
    multi = b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"x"}}]}\n\n'
    assert deltas(run([multi, DONE])) == ["x"]


def test_crlf_line_endings() -> None:
    assert deltas(run([chunk("a").replace(b"\n", b"\r\n"), DONE.replace(b"\n", b"\r\n")])) == ["a"]


def test_role_only_and_empty_chunks_are_recorded_but_are_not_content() -> None:
    recorder = run([chunk(role="assistant"), chunk(""), chunk("tok"), DONE])
    assert deltas(recorder) == ["", "", "tok"]
    assert recorder.saw_content


def test_invalid_json_chunk_is_invalid_response() -> None:
    with pytest.raises(ProbeFailure) as info:
        run([chunk("a"), b"data: {not json\n\n", DONE])
    assert info.value.kind == "invalid_response"


def test_stream_without_done_is_stream_broken() -> None:
    with pytest.raises(ProbeFailure) as info:
        run([chunk("a"), chunk("b")])
    assert info.value.kind == "stream_broken"


def test_error_object_mid_stream_is_invalid_response() -> None:
    with pytest.raises(ProbeFailure) as info:
        run([chunk("a"), b'data: {"error": {"message": "overloaded"}}\n\n', DONE])
    assert info.value.kind == "invalid_response"
    assert "overloaded" in info.value.detail


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "http_429"), (400, "http_4xx"), (401, "http_4xx"), (500, "http_5xx"), (503, "http_5xx")]
)
def test_http_errors_are_classified(status: int, kind: str) -> None:
    with pytest.raises(ProbeFailure) as info:
        run([b'{"error": "nope"}'], status=status, headers={"content-type": "application/json", "retry-after": "3"})
    assert info.value.kind == kind
    assert info.value.http_status == status
    assert info.value.retry_after_s == 3.0


def test_request_asks_for_usage_and_forwards_the_request_id() -> None:
    seen: list[httpx.Request] = []
    run([chunk("a"), DONE], seen=seen)
    import orjson

    body = orjson.loads(seen[0].content)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert seen[0].headers["X-Tokenpulse-Request-Id"] == "r1"
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"


def test_connect_error_is_classified_and_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused (header was Bearer {KEY})", request=request)

    caplog.set_level(logging.DEBUG)
    adapter = OpenAIAdapter("http://sim.test/v1", SecretStr(KEY), transport=httpx.MockTransport(refuse))
    recorder = StreamRecorder(FakeClock().monotonic_ns)
    request = ChatRequest(model="m", messages=(), max_tokens=1, request_id="r")
    with pytest.raises(ProbeFailure) as info:
        asyncio.run(adapter.stream(request, recorder))
    assert info.value.kind == "connect"
    everything = [str(info.value), info.value.detail, repr(info.value), repr(adapter), caplog.text]
    assert all(KEY not in text for text in everything)
    assert "***" in info.value.detail


def test_error_body_echoing_the_key_is_redacted() -> None:
    with pytest.raises(ProbeFailure) as info:
        run([f'{{"error": "bad key {KEY}"}}'.encode()], status=401, headers={"content-type": "application/json"})
    assert KEY not in str(info.value) and "***" in info.value.detail


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"choices":[{"delta":{"content":"x"}}]}', ParsedChunk("x")),
        ('{"choices":[{"delta":{"role":"assistant"}}]}', ParsedChunk()),
        ('{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}', ParsedChunk(usage=Usage(1, 2))),
        ('{"choices":[{"delta":{"content":null}}]}', ParsedChunk()),
        ('{"choices":[{"delta":{"reasoning_content":"hm"}}]}', ParsedChunk(reasoning="hm")),
        ('{"choices":[{"delta":{"reasoning":"hm","content":null}}]}', ParsedChunk(reasoning="hm")),
        (
            '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":""}}]}}]}',
            ParsedChunk("f", tool_call_indexes=(0,)),
        ),
    ],
)
def test_parse_chunk_payload(payload: str, expected: ParsedChunk) -> None:
    assert parse_chunk_payload(payload) == expected


def test_parse_rejects_non_objects() -> None:
    for bad in ("[1,2]", "42", "{"):
        with pytest.raises(ProbeFailure):
            parse_chunk_payload(bad)


def test_multi_byte_characters_split_across_reads_are_decoded() -> None:
    whole = chunk("héllo ✓") + DONE
    cut = whole.index("✓".encode()) + 1  # inside the three bytes of the check mark
    assert deltas(run([whole[:cut], whole[cut:]])) == ["héllo ✓"]


def test_reasoning_tool_calls_and_usage_details_are_recorded_in_their_columns() -> None:
    import orjson

    reasoning = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]}) + b"\n\n"
    tool = {"index": 0, "id": "c", "function": {"name": "get", "arguments": "{}"}}
    tools = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [tool]}}]}) + b"\n\n"
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    recorder = run([reasoning, tools, b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n", DONE])
    assert recorder.reasoning == ["hm", "", ""]
    assert recorder.deltas == ["", "get{}", ""]
    assert recorder.tool_chunks == {1: (0,)}
    assert recorder.usage == Usage(7, 3, 4, 1)


def test_a_bad_reasoning_field_mid_stream_is_invalid_response_naming_it() -> None:
    bad = b'data: {"choices":[{"index":0,"delta":{"reasoning":{"text":"x"}}}]}\n\n'
    with pytest.raises(ProbeFailure) as info:
        run([chunk("a"), bad, DONE])
    assert info.value.kind == "invalid_response" and "choices[0].delta.reasoning" in info.value.detail


def test_llama_cpp_usage_chunk_gives_cached_tokens_and_server_timings() -> None:
    from tokenpulse.producers.adapters.openai import parse_chunk_payload
    from tokenpulse.producers.stream import ServerTimings

    payload = (
        '{"choices":[],"created":1,"id":"c","model":"gemma","object":"chat.completion.chunk",'
        '"usage":{"completion_tokens":48,"prompt_tokens":30,"total_tokens":78,'
        '"prompt_tokens_details":{"cached_tokens":25}},'
        '"timings":{"cache_n":25,"prompt_n":5,"prompt_ms":18.2,"prompt_per_token_ms":3.6,'
        '"prompt_per_second":274.7,"predicted_n":48,"predicted_ms":466.1,"predicted_per_token_ms":9.7,'
        '"predicted_per_second":102.98}}'
    )
    chunk = parse_chunk_payload(payload)
    assert chunk.content == ""
    assert chunk.usage == Usage(30, 48, 25)
    assert chunk.timings == ServerTimings(
        prefill_ms=18.2, decode_ms=466.1, cached_tokens=25, prefill_tokens=5, decode_tokens=48
    )
    assert parse_chunk_payload('{"choices":[],"timings":{"prompt_ms":"x"}}').timings is None
    role_only = parse_chunk_payload('{"choices":[{"delta":{"role":"assistant","content":null}}]}')
    assert (role_only.content, role_only.usage, role_only.timings) == ("", None, None)

"""Precise open-loop sends: ``sleep_until``, requests held until their planned time, gc freeze, columns."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpulse.producers.adapters.openai import OpenAIAdapter, parse_chunk_payload
from tokenpulse.producers.chunks import ParsedChunk
from tokenpulse.producers.errors import ProbeFailure
from tokenpulse.producers.probe import run_async
from tokenpulse.producers.scheduler import sleep_until
from tokenpulse.producers.stream import ChatRequest, StreamChunk, StreamRecorder, Usage
from tokenpulse.producers.timing import Prices, compute_metrics, compute_metrics_columns
from tokenpulse.testing.adapters import stream_to_end

DONE = b"data: [DONE]\n\n"


def content(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


@pytest.mark.parametrize("spin_ns", [0, 1_500_000])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sleep_until_never_returns_before_the_deadline(spin_ns: int, loop: str) -> None:
    async def go() -> list[tuple[int, int]]:
        seen = []
        for offset_ns in (-1_000_000, 0, 200_000, 2_300_000):
            deadline = time.monotonic_ns() + offset_ns
            await sleep_until(deadline, spin_ns=spin_ns)
            seen.append((deadline, time.monotonic_ns()))
        return seen

    for deadline, woke in run_async(go(), loop):  # type: ignore[arg-type]
        assert woke >= deadline


def test_sleep_until_lets_other_tasks_run_while_spinning() -> None:
    async def go() -> int:
        ticks = 0

        async def other() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await sleep_until(time.monotonic_ns() + 3_000_000, spin_ns=3_000_000)
        task.cancel()
        return ticks

    assert asyncio.run(go()) > 0


def stream_once(pieces: list[bytes], send_at_ns: int | None) -> StreamRecorder:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    )
    recorder = StreamRecorder(time.monotonic_ns)
    adapter = OpenAIAdapter("http://sim.test/v1", None, transport=transport)
    request = ChatRequest("m", ({"role": "user", "content": "hi"},), 8, "r1", send_at_ns=send_at_ns)
    return stream_to_end(adapter, request, recorder)


def test_a_scheduled_request_is_not_sent_before_its_planned_time() -> None:
    planned = time.monotonic_ns() + 20_000_000
    recorder = stream_once([content("a"), DONE], planned)
    assert recorder.sent_ns is not None and recorder.sent_ns >= planned
    assert recorder.deltas == ["a"]


def test_requests_are_held_at_the_header_send_point_and_reuse_one_connection() -> None:
    from aiohttp import web

    peers: set[object] = set()

    async def handler(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(content("x") + DONE)
        await response.write_eof()
        return response

    async def go() -> list[tuple[int, StreamRecorder]]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        adapter = OpenAIAdapter(f"http://127.0.0.1:{port}/v1", None)
        results = []
        try:
            for _ in range(3):  # the first opens the connection; the others reuse it
                planned = time.monotonic_ns() + 10_000_000
                recorder = StreamRecorder(time.monotonic_ns)
                await adapter.stream(ChatRequest("m", (), 4, "r", send_at_ns=planned), recorder)
                results.append((planned, recorder))
        finally:
            await adapter.aclose()
            await runner.cleanup()
        return results

    results = asyncio.run(go())
    assert all(r.sent_ns is not None and r.sent_ns >= planned for planned, r in results)
    assert all(r.deltas == ["x"] and r.finished_ns is not None for _, r in results)
    assert len(peers) == 1, f"each stream is read to its end so its connection is reused; saw {peers}"


def test_the_probe_unfreezes_the_collector_after_a_run() -> None:
    from tokenpulse.producers.probe import run_workload_async
    from tokenpulse.producers.workload import parse_workload

    workload = parse_workload(
        {
            "name": "gc",
            "requests": 1,
            "schedule": {"kind": "closed", "concurrency": 1},
            "prompts": {"inline": ["hi"]},
            "endpoints": [{"name": "e", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
            "timeouts": {"connect_s": 1, "first_token_s": 1, "total_s": 1},
        }
    )

    class Sink:
        events: list[object] = []

        def publish(self, event: object) -> None:
            self.events.append(event)

    before = gc.get_freeze_count()
    asyncio.run(run_workload_async(workload, Sink(), api_keys={}))  # type: ignore[arg-type]
    assert gc.get_freeze_count() == before
    assert len(Sink.events) == 1


def test_recorder_keeps_chunks_column_wise_and_as_objects() -> None:
    recorder = StreamRecorder(iter(range(100, 1000, 100)).__next__)
    recorder.add("", None)
    recorder.add("a", None, 150)
    recorder.add("", Usage(3, 1))
    assert recorder.times_ns == [100, 150, 200]
    assert recorder.deltas == ["", "a", ""]
    assert recorder.usage == Usage(3, 1)
    assert recorder.chunks == [StreamChunk(100, ""), StreamChunk(150, "a"), StreamChunk(200, "", Usage(3, 1))]


@given(st.lists(st.tuples(st.integers(0, 10**8), st.text(max_size=3), st.booleans()), max_size=20))
def test_column_and_chunk_metrics_agree(steps: list[tuple[int, str, bool]]) -> None:
    t, chunks = 1_000, list[StreamChunk]()
    for gap, delta, with_usage in steps:
        t += gap
        chunks.append(StreamChunk(t, delta, Usage(5, len(chunks) + 1) if with_usage else None))
    usage = next((c.usage for c in reversed(chunks) if c.usage is not None), None)
    columns = compute_metrics_columns(
        1_000, t + 5, [c.t_ns for c in chunks], [c.delta for c in chunks], usage, prompt_text="p", prices=Prices(1, 2)
    )
    assert columns == compute_metrics(1_000, t + 5, chunks, prompt_text="p", prices=Prices(1, 2))


def test_columns_of_different_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="one of each per chunk"):
        compute_metrics_columns(0, 1, [1, 2], ["a"], None, prompt_text="", prices=Prices())


@pytest.mark.parametrize(
    "payload",
    ['{"choices":[{"delta":"text"}]}', '{"choices":[{"delta":[1]}]}', '{"choices":null,"error":"x"}'],
)
def test_malformed_chunk_shapes_are_invalid_response(payload: str) -> None:
    with pytest.raises(ProbeFailure) as info:
        parse_chunk_payload(payload)
    assert info.value.kind == "invalid_response"


def test_chunk_without_delta_content_or_with_null_delta_is_empty() -> None:
    assert parse_chunk_payload('{"choices":[{"delta":null,"finish_reason":"stop"}]}') == ParsedChunk()
    assert parse_chunk_payload('{"choices":[{"delta":{"content":null}}]}') == ParsedChunk()


def test_a_choice_that_is_not_an_object_is_invalid_response_naming_it() -> None:
    with pytest.raises(ProbeFailure, match=r"choices\[0\] is not an object") as info:
        parse_chunk_payload('{"choices":["x"]}')
    assert info.value.kind == "invalid_response"

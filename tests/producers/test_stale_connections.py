"""A reused keep-alive connection the server had closed is not a provider error: one retry, fresh connection.

The simulator's ``close_connection_after`` drops every connection, unanswered, when its request number
N+1 arrives: exactly what a client sees when it reuses a pooled connection that the server closed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tokenpulse.producers.adapters.openai import OpenAIAdapter
from tokenpulse.producers.errors import ProbeFailure
from tokenpulse.producers.metrics import ProbeCollector
from tokenpulse.producers.probe import run_workload_async
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorServer
from tokenpulse.producers.stream import ChatRequest, StreamRecorder
from tokenpulse.producers.workload import Workload, parse_workload
from tokenpulse.schemas import RequestTiming, decode, encode


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


def _workload(base_url: str, concurrency: int, requests: int) -> Workload:
    return parse_workload(
        {
            "name": "stale",
            "endpoints": [{"name": "sim", "kind": "openai", "base_url": base_url, "model": "sim-model"}],
            "prompts": {"synthetic": {"count": 3, "input_tokens": 20, "output_tokens": 4}},
            "schedule": {"kind": "closed", "concurrency": concurrency},
            "requests": requests,
        }
    )


@pytest.fixture
def closing_sim() -> Iterator[SimulatorServer]:
    profiles = {"sim": LatencyProfile(ttft_ms=2, tokens_per_s=5000, jitter=0)}
    with SimulatorServer(SimulatorConfig(endpoints=profiles, seed=1, close_connection_after=3)) as server:
        yield server


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_closed_keepalive_connections_are_retried_not_reported(closing_sim: SimulatorServer, concurrency: int) -> None:
    sink = ListSink()
    summary = asyncio.run(
        run_workload_async(_workload(closing_sim.endpoint_url("sim"), concurrency, 60), sink, api_keys={})
    )
    assert len(sink.events) == 60
    assert [e for e in sink.events if e.status != "ok"] == []
    retried = [e for e in sink.events if e.stale_connection_retry]
    # Every connection serves 3 requests, so every 4th request on one finds it closed (60 / 4 = 15 at
    # concurrency 1; a little fewer where requests start on fresh connections at higher concurrency).
    assert closing_sim.state.dropped_requests == len(retried)
    assert len(retried) >= 60 // 4 - concurrency
    assert summary.endpoints["sim"].stale_connection_retries == len(retried)
    for event in retried:
        # The simulator saw (and timed) only the retry, which the probe's TTFT covers.
        truth = closing_sim.state.ground_truth[str(event.event_id)]
        assert truth.ttft_ms is not None and event.ttft_ms is not None and event.ttft_ms >= truth.ttft_ms
        assert decode(RequestTiming, encode(event)).stale_connection_retry is True

    registry = CollectorRegistry()
    registry.register(ProbeCollector(summary))
    exposition = generate_latest(registry).decode()
    assert (
        f'tokenpulse_probe_stale_connection_retries_total{{endpoint="sim",workload="stale"}} {float(len(retried))}'
        in exposition
    )


class MarkingRecorder(StreamRecorder):
    """Keeps every ``mark_sent`` (each attempt marks at its start and again when its headers go out)."""

    def __init__(self) -> None:
        super().__init__(time.monotonic_ns)
        self.marks: list[int] = []

    def mark_sent(self) -> int:
        self.marks.append(super().mark_sent())
        return self.marks[-1]


def _requests(base_url: str, count: int = 1) -> list[MarkingRecorder | ProbeFailure]:
    """``count`` requests one after the other through one adapter (so the second may reuse a connection)."""
    adapter = OpenAIAdapter(base_url, None)
    results: list[MarkingRecorder | ProbeFailure] = []

    async def go() -> None:
        try:
            for number in range(count):
                recorder = MarkingRecorder()
                request = ChatRequest("m", ({"role": "user", "content": "hi"},), 4, f"r{number}")
                try:
                    await adapter.stream(request, recorder)
                except ProbeFailure as exc:
                    results.append(exc)
                else:
                    results.append(recorder)
        finally:
            await adapter.aclose()

    asyncio.run(go())
    return results


def test_the_retry_is_timed_from_its_own_send() -> None:
    profiles = {"sim": LatencyProfile(ttft_ms=2, tokens_per_s=5000, jitter=0)}
    with SimulatorServer(SimulatorConfig(endpoints=profiles, close_connection_after=1)) as sim:
        first, second = _requests(sim.endpoint_url("sim"), 2)
    assert isinstance(first, MarkingRecorder) and first.stale_connection_retries == 0 and len(first.marks) == 2
    assert isinstance(second, MarkingRecorder) and second.stale_connection_retries == 1
    assert len(second.marks) == 4  # two attempts
    assert second.sent_ns is not None and second.sent_ns >= second.marks[2] > second.marks[1]
    assert second.saw_content and second.usage is not None


def test_a_fresh_connection_closed_unanswered_is_a_provider_error() -> None:
    # close_connection_after=0: even the first request on a new connection is dropped; nothing is retried.
    profiles = {"sim": LatencyProfile(ttft_ms=2, tokens_per_s=5000, jitter=0)}
    with SimulatorServer(SimulatorConfig(endpoints=profiles, close_connection_after=0)) as sim:
        [failure] = _requests(sim.endpoint_url("sim"))
        assert isinstance(failure, ProbeFailure) and failure.kind == "connect"
        assert sim.state.dropped_requests == 1


def test_a_reused_connection_cut_after_response_bytes_is_not_retried() -> None:
    # One full answer on a keep-alive connection; on that connection the next answer stops inside its
    # status line. Bytes of a response arrived, so that is the provider's error: no retry, no new connection.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []
    body = b"data: [DONE]\n\n"
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body_part = data.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
        while len(body_part) < length:
            body_part += conn.recv(65536)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            read_request(conn)
            conn.sendall(answer)
            read_request(conn)
            conn.sendall(b"HTTP/1.1 20")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        first, second = _requests(f"http://127.0.0.1:{port}/v1", 2)
    finally:
        listener.close()
    assert isinstance(first, MarkingRecorder) and first.finished_ns is not None
    assert isinstance(second, ProbeFailure)
    assert len(accepted) == 1

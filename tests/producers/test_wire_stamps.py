"""Socket-level stamps: the probe's send and arrival times, and the simulator's request arrival times."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tokenpulse.producers.adapters.cerebras import CerebrasAdapter
from tokenpulse.producers.adapters.openai import OpenAIAdapter
from tokenpulse.producers.adapters.wire import SocketBackend, stamping_transport
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorServer
from tokenpulse.producers.stream import ChatRequest, StreamRecorder


def test_the_default_transport_stamps_at_the_socket() -> None:
    # httpx takes no network backend, so ours is put into its pool; this fails if httpx's internals move.
    transport = stamping_transport(httpx.Limits(max_connections=4))
    assert isinstance(transport._pool._network_backend, SocketBackend)  # type: ignore[attr-defined]
    adapter = OpenAIAdapter("http://127.0.0.1:1/v1", None)
    pool = adapter._client._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool._network_backend, SocketBackend)
    asyncio.run(adapter.aclose())


def test_the_cerebras_sdk_gets_the_stamping_transport_too() -> None:
    adapter = CerebrasAdapter("http://127.0.0.1:1", None)
    pool = adapter._client._client._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool._network_backend, SocketBackend)
    asyncio.run(adapter.aclose())


@pytest.mark.parametrize("kind", ["openai", "cerebras"])
def test_sent_and_chunk_times_come_from_the_socket_and_order_with_the_simulator(kind: str) -> None:
    """Request ids are forwarded, so every stamp can be ordered against the simulator's own clock."""
    config = SimulatorConfig(endpoints={"sim": LatencyProfile(ttft_ms=5, tokens_per_s=2000, jitter=0)})
    with SimulatorServer(config) as sim:

        async def go() -> list[tuple[str, int, StreamRecorder]]:
            adapter: OpenAIAdapter | CerebrasAdapter
            if kind == "openai":
                adapter = OpenAIAdapter(sim.endpoint_url("sim"), None)
            else:
                adapter = CerebrasAdapter(sim.endpoint_url("sim").removesuffix("/v1"), None)
            results = []
            try:
                for _ in range(3):  # the first opens the connection; the others reuse it
                    request_id = uuid.uuid4().hex
                    recorder = StreamRecorder(time.monotonic_ns)
                    before = time.monotonic_ns()
                    await adapter.stream(
                        ChatRequest("sim", ({"role": "user", "content": "hi"},), 4, request_id), recorder
                    )
                    results.append((request_id, before, recorder))
            finally:
                await adapter.aclose()
            return results

        results = asyncio.run(go())
        truth = sim.ground_truth()
    for request_id, before, recorder in results:
        true = truth[request_id]
        assert recorder.sent_ns is not None and before <= recorder.sent_ns <= true.received_ns
        assert recorder.finished_ns is not None
        content_times = [t for t, delta in zip(recorder.times_ns, recorder.deltas, strict=True) if delta]
        assert len(content_times) == len(true.content_ns) == 4
        # A chunk cannot be read before the simulator wrote it, nor after the probe finished.
        assert all(w <= t <= recorder.finished_ns for w, t in zip(true.content_ns, content_times, strict=True))


def test_simulator_stamps_each_request_when_its_first_bytes_arrive_on_a_kept_alive_connection() -> None:
    config = SimulatorConfig(endpoints={"sim": LatencyProfile(ttft_ms=1, tokens_per_s=5000, jitter=0)})
    body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    with SimulatorServer(config) as sim, httpx.Client(limits=httpx.Limits(max_connections=1)) as client:
        rows = []
        for path in ("/_sim/profiles", "/nowhere", None, None):  # other routes and a 404 claim their stamps too
            if path is not None:
                client.request("GET", sim.base_url + path)
                continue
            request_id = uuid.uuid4().hex
            sent = time.monotonic_ns()
            client.post(
                sim.endpoint_url("sim") + "/chat/completions",
                json=body,
                headers={"X-Tokenpulse-Request-Id": request_id},
            ).read()
            rows.append((sent, request_id))
        truth = sim.ground_truth()
    for sent, request_id in rows:
        true = truth[request_id]
        # Never a stamp left over from an earlier request on the connection (or from this one's body).
        assert sent <= true.received_ns
        assert true.first_content_ns is not None and true.received_ns <= true.first_content_ns

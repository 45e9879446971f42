"""The simulator's own transport: ground-truth arrival times from the kernel, flow control and closing."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
import uuid

import httpx
import pytest

from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorServer
from tokenpulse.producers.simulator.transport import StampedServer, StampedTransport


@pytest.mark.usefixtures("kernel_stamping")
def test_a_request_arrives_when_it_reached_the_host_not_when_the_stalled_simulator_read_it() -> None:
    config = SimulatorConfig(endpoints={"sim": LatencyProfile(ttft_ms=1, tokens_per_s=5000, jitter=0)})
    body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    with SimulatorServer(config) as sim, httpx.Client(limits=httpx.Limits(max_connections=1)) as client:
        url = sim.endpoint_url("sim") + "/chat/completions"
        client.post(url, json=body).read()  # the connection is open and kept alive
        stalled, stall_ended_ns = threading.Event(), []

        def stall() -> None:
            stalled.set()
            time.sleep(0.3)
            stall_ended_ns.append(time.monotonic_ns())

        sim.call_soon(stall)
        assert stalled.wait(10)
        request_id = uuid.uuid4().hex
        sent_ns = time.monotonic_ns()
        response = client.post(url, json=body, headers={"X-Tokenpulse-Request-Id": request_id})
        assert response.status_code == 200
        truth = sim.ground_truth()[request_id]
    # The request reached the host during the stall; its arrival is then, not when the loop was free again.
    assert sent_ns <= truth.received_ns < stall_ended_ns[0]
    assert truth.first_content_ns is not None and truth.first_content_ns > stall_ended_ns[0]


class _Sender(asyncio.Protocol):
    """Answers the first bytes with ``payload``; records arrival times, flow control and closing."""

    def __init__(self, payload: bytes, done: asyncio.Event) -> None:
        self.payload = payload
        self.done = done
        self.events: list[str] = []
        self.arrivals: list[int | None] = []
        self.transport: StampedTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, StampedTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.arrivals.append(self.transport.arrival_ns)
        self.transport.write(self.payload)

    def eof_received(self) -> None:
        self.events.append("eof")  # returning None: the transport closes once the payload is out

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(f"lost {exc!r}")
        self.done.set()


def test_a_slow_reader_gets_every_byte_through_flow_control_and_a_close_after_the_last_one() -> None:
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB, far more than the socket buffers hold
    received = bytearray()

    def slow_client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"go")
            conn.shutdown(socket.SHUT_WR)  # the server sees EOF while it still has bytes to send
            time.sleep(0.2)
            while chunk := conn.recv(65536):
                received.extend(chunk)

    async def go() -> _Sender:
        done = asyncio.Event()
        protocol = _Sender(payload, done)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        server = StampedServer(listener, lambda: protocol).start()
        client = threading.Thread(target=slow_client, args=(listener.getsockname()[1],))
        client.start()
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.to_thread(client.join, 10)
        server.close()
        await asyncio.sleep(0)
        return protocol

    protocol = asyncio.run(go())
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert protocol.events[0] == "pause" and protocol.events[-1] == "lost None"
    assert "resume" in protocol.events and "eof" in protocol.events
    assert protocol.arrivals and all(isinstance(t, int) for t in protocol.arrivals)
    assert protocol.transport is not None and protocol.transport.arrival_ns is None  # only during data_received

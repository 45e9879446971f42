"""The probe's own httpcore connections: kernel receive timestamps, back-pressure, errors and TLS."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpcore
import httpx
import pytest
import trustme

from tokenpulse.producers.adapters.wire import (
    _PAUSE_AT_BYTES,
    _RECV_SIZE,
    SocketBackend,
    SocketReads,
    SocketStream,
    WireStamps,
    stamping,
    stamping_transport,
)
from tokenpulse.testing import FakeClock


@contextmanager
def one_connection_server(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback listener whose first connection is handed to ``serve`` in a thread; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    failures: list[BaseException] = []

    def run() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                serve(conn)
        except BaseException as exc:  # surfaced by the test below
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(10)
        listener.close()
    assert not failures, failures


async def connect(port: int) -> SocketStream:
    stream = await SocketBackend().connect_tcp("127.0.0.1", port, timeout=5)
    assert isinstance(stream, SocketStream)
    return stream


@pytest.mark.usefixtures("kernel_stamping")
def test_a_read_is_stamped_when_its_bytes_reached_the_host_not_when_the_busy_loop_got_to_them() -> None:
    sent = threading.Event()
    send_started: list[int] = []

    def serve(conn: socket.socket) -> None:
        assert conn.recv(1) == b"g"
        send_started.append(time.monotonic_ns())
        conn.sendall(b"first token")
        sent.set()
        conn.recv(1)  # until the client hangs up

    with one_connection_server(serve) as port:

        async def go() -> tuple[bytes, int | None, int, SocketReads]:
            stream = await connect(port)
            await stream.write(b"g")
            stamps = WireStamps(time.monotonic_ns)
            assert sent.wait(10)  # blocks the event loop: the bytes arrive while nothing reads them
            loop_free_ns = time.monotonic_ns()
            with stamping(stamps):
                data = await stream.read(1024, timeout=5)
            await stream.aclose()
            return data, stamps.read_ns, loop_free_ns, stream.reads

        data, read_ns, loop_free_ns, reads = asyncio.run(go())
    assert data == b"first token" and reads == SocketReads(total=1, kernel_stamped=1)
    # The kernel's receive time: after the server began sending, and before the loop could have read it.
    assert read_ns is not None and send_started[0] <= read_ns < loop_free_ns


def test_with_another_clock_a_read_is_stamped_on_that_clock_and_a_split_read_keeps_its_arrival() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"abcdef")
        conn.recv(1)

    clock = FakeClock(start_ns=1_000)
    with one_connection_server(serve) as port:

        async def go() -> list[tuple[bytes, int | None]]:
            stream = await connect(port)
            stamps = WireStamps(clock.monotonic_ns)
            reads = []
            with stamping(stamps):
                reads.append((await stream.read(2, timeout=5), stamps.read_ns))
                clock.advance(ns=500)
                reads.append((await stream.read(100, timeout=5), stamps.read_ns))
            await stream.aclose()
            return reads

        reads = asyncio.run(go())
    assert reads == [(b"ab", 1_000), (b"cdef", 1_500)]


def test_kernel_arrivals_of_a_split_read_are_the_same_for_both_parts() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"abcdef")
        conn.recv(1)

    with one_connection_server(serve) as port:

        async def go() -> list[tuple[bytes, int | None]]:
            stream = await connect(port)
            stamps = WireStamps(time.monotonic_ns)
            await asyncio.sleep(0.05)  # all six bytes are in one read
            with stamping(stamps):
                first = (await stream.read(2, timeout=5), stamps.read_ns)
                second = (await stream.read(100, timeout=5), stamps.read_ns)
            await stream.aclose()
            return [first, second]

        (first, first_ns), (second, second_ns) = asyncio.run(go())
    assert (first, second) == (b"ab", b"cdef")
    assert first_ns is not None and first_ns == second_ns


def test_a_large_response_arrives_whole_while_unread_bytes_stay_bounded() -> None:
    payload = bytes(range(256)) * (24 * 1024)  # 6 MiB

    def serve(conn: socket.socket) -> None:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    with one_connection_server(serve) as port:

        async def go() -> tuple[bytes, list[int]]:
            stream = await connect(port)
            received, buffered = bytearray(), []
            while True:
                await asyncio.sleep(0.01)  # a slow consumer: the reader callback runs ahead of it
                buffered.append(stream._buffered)
                data = await stream.read(64 * 1024, timeout=5)
                if not data:
                    break
                received += data
            await stream.aclose()
            return bytes(received), buffered

        received, buffered = asyncio.run(go())
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    # Reading stops once the unread bytes pass the limit, so they never exceed it by more than one read.
    assert max(buffered) <= _PAUSE_AT_BYTES + _RECV_SIZE
    assert max(buffered) >= _PAUSE_AT_BYTES  # the pause was reached, so the bound above was exercised


def test_end_of_stream_reads_empty_and_makes_an_idle_connection_look_readable() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"bye")

    with one_connection_server(serve) as port:

        async def go() -> tuple[bytes, bool, bytes]:
            stream = await connect(port)
            first = await stream.read(100, timeout=5)
            await asyncio.sleep(0.05)
            readable = stream.get_extra_info("is_readable")  # httpcore drops such a pooled connection
            rest = await stream.read(100, timeout=5)
            await stream.aclose()
            return first, readable, rest

        assert asyncio.run(go()) == (b"bye", True, b"")


def test_connect_and_read_failures_are_httpcore_errors() -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()

    async def refused() -> None:
        await SocketBackend().connect_tcp("127.0.0.1", port, timeout=5)

    with pytest.raises(httpcore.ConnectError):
        asyncio.run(refused())

    def serve(conn: socket.socket) -> None:
        conn.recv(1)  # sends nothing

    with one_connection_server(serve) as server_port:

        async def silent() -> None:
            stream = await connect(server_port)
            try:
                await stream.read(100, timeout=0.05)
            finally:
                await stream.aclose()

        with pytest.raises(httpcore.ReadTimeout):
            asyncio.run(silent())


def test_a_large_write_waits_for_room_and_one_the_peer_never_reads_times_out() -> None:
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than the socket buffers hold
    digest = hashlib.sha256(payload).digest()
    read_back: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        received = bytearray()
        while len(received) < len(payload):
            time.sleep(0.001)  # a slow reader: the client's socket fills up
            received += conn.recv(65536)
        read_back.append(hashlib.sha256(received).digest())
        conn.recv(1)

    with one_connection_server(serve) as port:

        async def whole() -> None:
            stream = await connect(port)
            await stream.write(payload, timeout=30)
            await asyncio.sleep(0.2)
            await stream.aclose()

        asyncio.run(whole())
    assert read_back == [digest]

    def never_read(conn: socket.socket) -> None:
        time.sleep(1.0)

    with one_connection_server(never_read) as port:

        async def stuck() -> None:
            stream = await connect(port)
            try:
                await stream.write(payload * 4, timeout=0.2)
            finally:
                await stream.aclose()

        with pytest.raises(httpcore.WriteTimeout):
            asyncio.run(stuck())


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"".join(b"line %d of a long body\n" % i for i in range(40_000))  # ~1 MB: many TLS records

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_https_through_httpx_with_tls_over_memory_bios_keeps_kernel_arrival_times() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://localhost:{server.server_address[1]}/"

    async def go() -> list[tuple[int, int, int | None, int, str | None]]:
        transport = stamping_transport(httpx.Limits(max_connections=1), verify=client_context)
        results = []
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):  # the second request reuses the TLS connection
                stamps = WireStamps(time.monotonic_ns)
                before = time.monotonic_ns()
                with stamping(stamps):
                    response = await client.get(url)
                after = time.monotonic_ns()
                version = response.extensions["network_stream"].get_extra_info("ssl_object").version()
                results.append((response.status_code, before, stamps.read_ns, after, version))
                assert response.content == _Handler.body
        return results

    try:
        results = asyncio.run(go())
    finally:
        server.shutdown()
        server.server_close()
    for status, before, read_ns, after, version in results:
        assert status == 200 and version in ("TLSv1.2", "TLSv1.3")
        assert read_ns is not None and before < read_ns < after


def test_https_to_a_server_with_an_untrusted_certificate_is_a_connect_error() -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(server_context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    async def go() -> None:
        async with httpx.AsyncClient(transport=stamping_transport(httpx.Limits(max_connections=1))) as client:
            await client.get(f"https://localhost:{server.server_address[1]}/", timeout=5)

    try:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(go())
    finally:
        server.shutdown()
        server.server_close()

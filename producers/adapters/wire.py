"""Socket-level timestamps for httpx: when a request was written and when its response bytes arrived.

httpx hands a body chunk to its caller only after httpcore has parsed it with h11 and it has passed
httpx's decoders, and only once the event loop gets round to the reading task: with many streams on one
loop that is often a millisecond after the bytes came in. That wait is the probe's, not the provider's.
So httpx's connections here are ``SocketStream``s (``SocketBackend`` replaces httpcore's network backend):

- the socket's reader callback stays registered and reads with ``recvmsg`` the moment the socket is
  readable, and the kernel attaches its own receive timestamp to every read (``producers.kernel_time``:
  the time the last packet of those bytes entered the host's network stack, on the monotonic clock).
  Neither the event loop's lag nor the process's wake-up is counted;
- a request is stamped ``sent`` just before its first bytes go to ``send``.

The stamps go to the ``WireStamps`` of the request the current task is serving (``stamping``). TLS runs
over ``ssl.MemoryBIO`` so the raw reads keep their timestamps.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from tokenpulse.producers.kernel_time import ANCILLARY_SIZE, enable_receive_timestamps, kernel_arrival_ns

_ACTIVE: ContextVar[WireStamps | None] = ContextVar("tokenpulse_wire_stamps", default=None)

_RECV_SIZE = 65536
_PAUSE_AT_BYTES = 1 << 20  # stop reading the socket while this much is read but not yet taken


@dataclass(slots=True)
class WireStamps:
    """What the socket saw of one request, in ``clock`` nanoseconds (``None`` until it happened).

    ``sending`` is set by the adapter when the request's headers are about to be written (not during a
    TCP or TLS connect); the next write stamps ``sent_ns``. ``read_ns`` is when the bytes of the latest
    read arrived, so when httpx yields a piece of the body, its last byte arrived at ``read_ns``. Arrival
    times come from the kernel only when ``clock`` is ``time.monotonic_ns``, the clock they are put on;
    with any other clock (a test's fake clock) a read is stamped ``clock()`` when it is taken.
    """

    clock: Callable[[], int]
    sending: bool = False
    sent_ns: int | None = None
    read_ns: int | None = None


@dataclass(slots=True)
class SocketReads:
    """Socket reads with data on an adapter's connections, and how many carried the kernel's timestamp.

    Where the kernel gives none (not Linux, a sandboxed network stack), arrival times fall back to the
    event loop's and include its lag; ``tokenpulse_probe_socket_reads_total`` shows which one a probe got.
    """

    total: int = 0
    kernel_stamped: int = 0


@contextmanager
def stamping(stamps: WireStamps) -> Iterator[WireStamps]:
    """Make ``stamps`` the target of every ``SocketStream`` used by the current task."""
    token = _ACTIVE.set(stamps)
    try:
        yield stamps
    finally:
        _ACTIVE.reset(token)


def _readable_now(sock: socket.socket) -> bool:
    """Whether a read would return at once (data, end of stream or an error), without reading."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _wake(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` unless it is already done (a level-triggered callback can fire again first)."""
    if not waiter.done():
        waiter.set_result(None)


class SocketStream(httpcore.AsyncNetworkStream):
    """One connection read and written straight from the event loop, with TLS over ``ssl.MemoryBIO``.

    While the connection is open its reader is registered: ``_on_readable`` reads at once and keeps each
    piece with its arrival time (``kernel_arrival_ns``, else the callback's own time); ``read`` hands the
    pieces on. Reading pauses while more than ``_PAUSE_AT_BYTES`` wait to be taken, so a slow consumer
    gets TCP back-pressure. Reads are counted in ``reads`` (shared by the connections of one backend).
    """

    def __init__(self, sock: socket.socket, reads: SocketReads | None = None) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._received: deque[tuple[bytes, int]] = deque()
        self._buffered = 0
        self._eof = False
        self._error: OSError | None = None
        self._reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._tls: ssl.SSLObject | None = None
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._tls_arrived_ns = 0
        self.reads = reads if reads is not None else SocketReads()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enable_receive_timestamps(sock)
        self._resume_reading()

    # -- the event loop's side ------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data, ancillary, _flags, _address = self._sock.recvmsg(_RECV_SIZE, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._error = exc
            self._pause_reading()
        else:
            if data:
                arrived = kernel_arrival_ns(ancillary)
                self.reads.total += 1
                if arrived is None:
                    arrived = time.monotonic_ns()
                else:
                    self.reads.kernel_stamped += 1
                self._received.append((data, arrived))
                self._buffered += len(data)
                if self._buffered >= _PAUSE_AT_BYTES:
                    self._pause_reading()
            else:
                self._eof = True
                self._pause_reading()
        if self._waiter is not None:
            _wake(self._waiter)

    def _resume_reading(self) -> None:
        if not self._reading:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    # -- raw bytes ------------------------------------------------------------------------------------

    async def _receive(self, timeout: float | None) -> tuple[bytes, int]:
        """The next piece read from the socket and its arrival time; ``b""`` at end of stream."""
        while not self._received:
            if self._error is not None:
                raise httpcore.ReadError(str(self._error)) from self._error
            if self._eof:
                return b"", time.monotonic_ns()
            if self._sock.fileno() < 0:
                raise httpcore.ReadError("connection is closed")
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no data within {timeout} s") from None
            finally:
                self._waiter = None
        data, arrived = self._received.popleft()
        self._buffered -= len(data)
        if self._buffered < _PAUSE_AT_BYTES and not (self._eof or self._error is not None):
            self._resume_reading()
        return data, arrived

    async def _send_all(self, data: bytes, timeout: float | None) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                await self._writable(timeout)
                continue
            except OSError as exc:
                raise httpcore.WriteError(str(exc)) from exc
            view = view[sent:]

    async def _writable(self, timeout: float | None) -> None:
        waiter = self._loop.create_future()
        self._loop.add_writer(self._fd, _wake, waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not write within {timeout} s") from None
        finally:
            self._loop.remove_writer(self._fd)

    # -- httpcore's interface -------------------------------------------------------------------------

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._tls is not None:
            data, arrived = await self._read_tls(max_bytes, timeout)
        else:
            data, arrived = await self._receive(timeout)
            if len(data) > max_bytes:
                self._received.appendleft((data[max_bytes:], arrived))
                self._buffered += len(data) - max_bytes
                data = data[:max_bytes]
        stamps = _ACTIVE.get()
        if stamps is not None and data:
            stamps.read_ns = arrived if stamps.clock is time.monotonic_ns else stamps.clock()
        return data

    async def _read_tls(self, max_bytes: int, timeout: float | None) -> tuple[bytes, int]:
        assert self._tls is not None
        while True:
            try:
                data = self._tls.read(max_bytes)
            except ssl.SSLWantReadError:
                raw, self._tls_arrived_ns = await self._receive(timeout)
                if raw:
                    self._tls_in.write(raw)
                else:
                    self._tls_in.write_eof()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"", time.monotonic_ns()  # closed, with or without a TLS close_notify
            except ssl.SSLError as exc:
                raise httpcore.ReadError(f"TLS: {exc}") from exc
            if self._tls_out.pending:  # TLS 1.3 may answer while reading (a key update)
                await self._send_all(self._tls_out.read(), timeout)
            return data, self._tls_arrived_ns

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._tls is not None:
            try:
                self._tls.write(buffer)
            except ssl.SSLError as exc:
                raise httpcore.WriteError(f"TLS: {exc}") from exc
            buffer = self._tls_out.read()
        stamps = _ACTIVE.get()
        if stamps is not None and stamps.sending:
            stamps.sending = False
            stamps.sent_ns = stamps.clock()
        await self._send_all(buffer, timeout)

    async def aclose(self) -> None:
        self._pause_reading()
        self._sock.close()
        if self._waiter is not None:
            _wake(self._waiter)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        self._tls = ssl_context.wrap_bio(self._tls_in, self._tls_out, server_hostname=server_hostname)
        try:
            async with asyncio.timeout(timeout):
                while not self._handshake_step():
                    if self._tls_out.pending:
                        await self._send_all(self._tls_out.read(), None)
                    raw, _ = await self._receive(None)
                    if not raw:
                        raise httpcore.ConnectError("the server closed the connection during the TLS handshake")
                    self._tls_in.write(raw)
                if self._tls_out.pending:
                    await self._send_all(self._tls_out.read(), None)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake took longer than {timeout} s") from None
        except (ssl.SSLError, httpcore.ReadError, httpcore.WriteError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    def _handshake_step(self) -> bool:
        """``True`` once the TLS handshake is done; ``False`` while it waits for the server's bytes."""
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._tls
        if info == "socket":
            return self._sock
        if self._sock.fileno() < 0:
            return True if info == "is_readable" else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":  # what httpcore asks before reusing an idle connection
            return bool(self._received) or self._eof or self._error is not None or _readable_now(self._sock)
        return None


class SocketBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend made of ``SocketStream`` TCP connections (asyncio and uvloop; httpx asks
    for Unix sockets only when given ``uds=``, which the probe never does). Its connections count their
    reads in ``reads``."""

    def __init__(self, reads: SocketReads | None = None) -> None:
        self.reads = reads if reads is not None else SocketReads()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        options = list(socket_options or ())
        try:
            async with asyncio.timeout(timeout):
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                errors: list[OSError] = []
                for family, kind, proto, _name, address in addresses:
                    sock = socket.socket(family, kind, proto)
                    try:
                        sock.setblocking(False)
                        for option in options:
                            sock.setsockopt(*option)
                        if local_address is not None:
                            sock.bind((local_address, 0))
                        await loop.sock_connect(sock, address)
                    except OSError as exc:
                        sock.close()
                        errors.append(exc)
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return SocketStream(sock, self.reads)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"could not connect to {host}:{port} within {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        reasons = "; ".join(map(str, errors)) or "no address"
        raise httpcore.ConnectError(f"could not connect to {host}:{port}: {reasons}")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def stamping_transport(
    limits: httpx.Limits, verify: ssl.SSLContext | bool = True, reads: SocketReads | None = None
) -> httpx.AsyncHTTPTransport:
    """httpx's own transport whose connections are ``SocketStream``s (counting their reads in ``reads``).

    httpx does not take a network backend, so the one of its httpcore pool is replaced (``_pool`` and
    ``_network_backend`` are private; httpx is pinned <0.29 and a unit test checks the replacement).
    """
    transport = httpx.AsyncHTTPTransport(limits=limits, verify=verify)
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool):
        raise TypeError(f"httpx.AsyncHTTPTransport has an unexpected pool {type(pool).__name__}")
    pool._network_backend = SocketBackend(reads)
    return transport

"""The simulator's TCP server: connections that know when each request's bytes reached the host.

The simulator's ground truth starts a request's TTFT when the request arrived. An asyncio (or uvloop)
transport only says when the event loop got round to reading it, which under load is milliseconds later,
and that lag would count against the probe being measured. ``StampedServer`` accepts connections itself and
gives each a ``StampedTransport``, which reads with ``recvmsg`` and keeps the kernel's receive timestamp of
the bytes it is handing to ``data_received`` in ``arrival_ns`` (``producers.kernel_time``). Everything else
is a plain non-blocking socket transport: writes go straight to ``send`` and are buffered only when the
socket is full, with the protocol's ``pause_writing``/``resume_writing`` flow control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tokenpulse.producers.kernel_time import ANCILLARY_SIZE, enable_receive_timestamps, kernel_arrival_ns

log = logging.getLogger(__name__)

_RECV_SIZE = 256 * 1024
_HIGH_WATER = 64 * 1024
_LOW_WATER = 16 * 1024


class StampedTransport(asyncio.Transport):
    """A server-side TCP connection whose reads carry arrival times (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol) -> None:
        super().__init__(extra={"socket": sock, "peername": sock.getpeername(), "sockname": sock.getsockname()})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._unsent = bytearray()
        self._high_water, self._low_water = _HIGH_WATER, _LOW_WATER
        self._writing_paused = False  # the protocol was told to pause writing
        self._eof_after_unsent = False
        self._closing = False
        self._lost = False
        self._reading = False
        self.arrival_ns: int | None = None
        """Arrival (monotonic ns) of the bytes being handed to ``data_received``, during that call."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enable_receive_timestamps(sock)
        protocol.connection_made(self)
        self.resume_reading()

    # -- reading -------------------------------------------------------------------------------------

    def _read_ready(self) -> None:
        try:
            data, ancillary, _flags, _address = self._sock.recvmsg(_RECV_SIZE, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        try:
            if not data:
                self.pause_reading()
                if not self._protocol.eof_received():
                    self.close()
                return
            arrived = kernel_arrival_ns(ancillary)
            self.arrival_ns = arrived if arrived is not None else time.monotonic_ns()
            self._protocol.data_received(data)
        except Exception as exc:  # a protocol bug: drop this connection, as asyncio's transports do
            log.exception("simulator: the protocol failed on received data; closing the connection")
            self._force_close(exc)
        finally:
            self.arrival_ns = None

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    # -- writing -------------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_after_unsent:
            raise RuntimeError("write() after write_eof()")
        if not data or self._closing:  # like asyncio's transports, a closing one drops what it is given
            return
        if not self._unsent:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        self._unsent += data
        if not self._writing_paused and len(self._unsent) > self._high_water:
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        del self._unsent[:sent]
        if self._writing_paused and len(self._unsent) <= self._low_water:
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._unsent:
            return
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._loop.call_soon(self._connection_lost, None)
        elif self._eof_after_unsent:
            self._shutdown_write()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_after_unsent:
            return
        self._eof_after_unsent = True
        if not self._unsent:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def get_write_buffer_size(self) -> int:
        return len(self._unsent)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_water = _HIGH_WATER if high is None else high
        self._low_water = (self._high_water // 4) if low is None else low

    # -- closing -------------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; the connection closes once the unsent bytes are written."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if not self._unsent:
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        if self._unsent:
            self._unsent.clear()
            self._loop.remove_writer(self._fd)
        if not self._closing:
            self._closing = True
            self.pause_reading()
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


class StampedServer:
    """Accepts connections on a bound socket and serves each with ``StampedTransport`` and a new protocol."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._task: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._sock]

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> StampedServer:
        """Listen, and accept in a task of ``loop`` (default: the running loop)."""
        self._sock.listen(1024)
        self._sock.setblocking(False)
        loop = loop or asyncio.get_running_loop()
        self._task = loop.create_task(self._accept_forever(), name="simulator-accept")
        return self

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _address = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of file descriptors, say: keep serving the open connections
                log.warning("simulator: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            try:
                StampedTransport(loop, conn, self._factory())
            except OSError as exc:  # the client went away before it was served
                log.debug("simulator: dropped a connection at accept: %s", exc)
                conn.close()

    def close(self) -> None:
        """Stop accepting (open connections are closed by their protocols, e.g. aiohttp's shutdown).

        The listening socket is closed once the accept task has ended, after the loop let go of it.
        """
        if self._task is None:
            self._sock.close()
            return
        self._task.cancel()
        self._task.add_done_callback(lambda _task: self._sock.close())
        self._task = None


def accepted_arrival_ns(transport: Any) -> int | None:
    """The arrival time a ``StampedTransport`` is handing out right now, or ``None`` for any other transport."""
    return transport.arrival_ns if isinstance(transport, StampedTransport) else None

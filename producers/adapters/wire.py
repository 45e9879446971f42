"""Socket-level timestamps for httpx: when a request was written and when response bytes were read.

httpx hands a body chunk to its caller only after httpcore has parsed it with h11 and it has passed
httpx's byte and text decoders, tens of microseconds after the bytes were read (more when other streams
run on the event loop in between); the request side likewise encodes the headers after httpcore's
``send_request_headers.started`` trace event. ``StampingBackend`` wraps httpcore's network backend so each
connection stamps, on the ``WireStamps`` of the request the current task is serving, the moment the
request's first write is handed to the socket and the moment each read returned.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

_ACTIVE: ContextVar[WireStamps | None] = ContextVar("tokenpulse_wire_stamps", default=None)


@dataclass(slots=True)
class WireStamps:
    """What the socket saw of one request, in ``clock`` nanoseconds (``None`` until it happened).

    ``sending`` is set by the adapter when the request's headers are about to be written (not during a
    TCP or TLS connect); the next write stamps ``sent_ns``. ``read_ns`` is the end of the latest read,
    so when httpx yields a piece of the body, its last byte arrived at ``read_ns``.
    """

    clock: Callable[[], int]
    sending: bool = False
    sent_ns: int | None = None
    read_ns: int | None = None


@contextmanager
def stamping(stamps: WireStamps) -> Iterator[WireStamps]:
    """Make ``stamps`` the target of every ``StampingBackend`` connection used by the current task."""
    token = _ACTIVE.set(stamps)
    try:
        yield stamps
    finally:
        _ACTIVE.reset(token)


class StampingStream(httpcore.AsyncNetworkStream):
    """A connection that stamps the current task's ``WireStamps`` around its reads and writes."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._inner.read(max_bytes, timeout)
        stamps = _ACTIVE.get()
        if stamps is not None:
            stamps.read_ns = stamps.clock()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        stamps = _ACTIVE.get()
        if stamps is not None and stamps.sending:
            stamps.sending = False
            stamps.sent_ns = stamps.clock()
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return StampingStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class StampingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with ``StampingStream`` connections."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return StampingStream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return StampingStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def stamping_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's own transport whose connections stamp ``WireStamps``.

    httpx does not take a network backend, so the one of its httpcore pool is wrapped (``_pool`` and
    ``_network_backend`` are private; httpx is pinned <0.29 and a unit test checks the wrapping).
    """
    transport = httpx.AsyncHTTPTransport(limits=limits)
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool):
        raise TypeError(f"httpx.AsyncHTTPTransport has an unexpected pool {type(pool).__name__}")
    pool._network_backend = StampingBackend(pool._network_backend)
    return transport

"""OpenAI-compatible chat completions over httpx, with the SSE body decoded by ``producers.sse``.

Covers OpenAI, vLLM, NVIDIA NIM, Groq, Together and Cerebras's OpenAI-compatible API. Asks for
``stream_options: {include_usage: true}`` so token counts come from the server.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from tokenpulse.producers.adapters.wire import SocketReads, WireStamps, stamping, stamping_transport
from tokenpulse.producers.chunks import InvalidChunk, ParsedChunk, parse_chunk_document
from tokenpulse.producers.errors import ProbeFailure, failure_for_exception, failure_for_status, redact
from tokenpulse.producers.scheduler import sleep_until
from tokenpulse.producers.sse import SSEEvent, SSEParser
from tokenpulse.producers.stream import ChatRequest, StreamRecorder

REQUEST_ID_HEADER = "X-Tokenpulse-Request-Id"
_SENT_EVENTS = frozenset({"http11.send_request_headers.started", "http2.send_request_headers.started"})
# What a request written to a connection the server has already closed fails with: EOF before the status
# line (RemoteProtocolError "Server disconnected without sending a response"), ECONNRESET on the read, or
# EPIPE on the write.
_STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

log = logging.getLogger(__name__)


class _StaleConnection(Exception):
    """The request failed on a reused keep-alive connection before any response byte arrived."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_chunk_payload(data: str) -> ParsedChunk:
    """Answer text, reasoning text, tool-call indexes and usage of one ``data:`` payload of a chunk.

    One ``orjson.loads`` and exact-type checks (this runs for every streamed chunk, see ``producers.chunks``).
    Raises ``ProbeFailure(invalid_response)`` naming the field for anything that is not a chunk object,
    including an ``error`` object that some servers send mid-stream.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProbeFailure("invalid_response", f"stream chunk is not JSON: {data[:80]!r}") from None
    try:
        return parse_chunk_document(document)
    except InvalidChunk as exc:
        raise ProbeFailure("invalid_response", f"{exc}: {data[:80]!r}") from None


class OpenAIAdapter:
    """Streams ``POST {base_url}/chat/completions``; one adapter per endpoint, sharing one ``AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | None,
        *,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1000,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._header_values = [value for value in (extra_headers or {}).values() if value]
        self._traced = False  # set once the transport has emitted an httpcore trace event
        headers = {**(extra_headers or {}), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        if api_key is not None and api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.socket_reads = SocketReads()
        timeout = timeout or httpx.Timeout(connect=10.0, read=120.0, write=10.0, pool=None)
        self._client = httpx.AsyncClient(
            headers=headers, timeout=timeout, transport=transport or stamping_transport(limits, reads=self.socket_reads)
        )
        # Retries after a stale keep-alive connection go through a pool that keeps no connection alive, so
        # each opens a fresh one (a given transport, e.g. a test's mock, is used for them as well).
        fresh = httpx.Limits(max_connections=max_connections, max_keepalive_connections=0)
        self._fresh_client = (
            self._client
            if transport is not None
            else httpx.AsyncClient(
                headers=headers, timeout=timeout, transport=stamping_transport(fresh, reads=self.socket_reads)
            )
        )

    def __repr__(self) -> str:
        return f"OpenAIAdapter(url={self._url!r}, api_key=***)"

    async def stream(self, request: ChatRequest, recorder: StreamRecorder) -> None:
        body = orjson.dumps(
            {
                "model": request.model,
                "messages": list(request.messages),
                **request.body_fields(),
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        headers = {"Content-Type": "application/json", REQUEST_ID_HEADER: request.request_id}
        try:
            try:
                await self._attempt(self._client, body, headers, request, recorder)
            except _StaleConnection as stale:
                # A keep-alive connection the server had closed while it sat in the pool: the request never
                # reached the server, so it is sent once more, on a connection of its own, and timed from
                # that send. A failure there, or after any response byte, is the provider's.
                recorder.stale_connection_retries += 1
                log.debug("stale keep-alive connection (%s); sending again on a fresh one", stale.reason)
                await self._attempt(self._fresh_client, body, headers, request, recorder, retry=True)
        except ProbeFailure as exc:
            raise exc.redacted(self._secrets()) from None

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        body: bytes,
        headers: dict[str, str],
        request: ChatRequest,
        recorder: StreamRecorder,
        *,
        retry: bool = False,
    ) -> None:
        """Send the request once on ``client``; raises ``_StaleConnection`` (only when not ``retry``) if it
        failed on a reused connection before any response byte, else ``ProbeFailure``."""
        streaming = False
        send_at_ns = request.send_at_ns
        wire = WireStamps(recorder.clock)
        fresh_connection = False

        async def trace(event_name: str, info: dict[str, Any]) -> None:
            # "Request sent" is when the request goes onto an open connection: pool waits and TCP/TLS
            # connects before it are not the server's latency. The connection stamps the moment the
            # headers are handed to the socket (``wire.sent_ns``); the stamp taken here is the fallback
            # of a transport without ``SocketBackend``. A scheduled request is held here, on its
            # connection, until its planned send time. A ``connect_tcp`` event means the pool opened a
            # new connection for this request rather than reusing a kept-alive one.
            nonlocal fresh_connection
            self._traced = True
            if event_name == "connection.connect_tcp.started":
                fresh_connection = True
            elif event_name in _SENT_EVENTS:
                if send_at_ns is not None:
                    await sleep_until(send_at_ns, recorder.clock)
                recorder.mark_sent()
                wire.sending = True

        try:
            if send_at_ns is not None and not self._traced:
                await sleep_until(send_at_ns, recorder.clock)  # a transport that emits no trace events
            recorder.mark_sent()  # fallback if the transport emits no trace events (e.g. a mock transport)
            with stamping(wire):
                async with client.stream(
                    "POST", self._url, content=body, headers=headers, extensions={"trace": trace}
                ) as response:
                    recorder.http_status = response.status_code
                    if response.status_code >= 300:
                        text = (await response.aread()).decode(errors="replace")
                        raise failure_for_status(response.status_code, response.headers, self._redact(text))
                    streaming = True
                    done = await self._read_events(response, recorder, wire)
            if not done:
                raise ProbeFailure("stream_broken", "stream ended without [DONE]")
        except ProbeFailure:
            raise
        except Exception as exc:
            reused = self._traced and not fresh_connection  # a transport without trace events: unknown
            no_response = not streaming and wire.read_ns is None
            if not retry and reused and no_response and isinstance(exc, _STALE_CONNECTION_ERRORS):
                raise _StaleConnection(type(exc).__name__) from None
            raise failure_for_exception(exc, streaming=streaming) from None
        finally:
            if wire.sent_ns is not None:
                recorder.sent_ns = wire.sent_ns

    async def _read_events(self, response: httpx.Response, recorder: StreamRecorder, wire: WireStamps) -> bool:
        """Decode the SSE body with our incremental parser; ``True`` if ``[DONE]`` arrived.

        One flat loop over ``aiter_bytes`` rather than httpx-sse's ``EventSource.aiter_sse``: no
        three async-generator hops per chunk (``aiter_text``'s among them: an event stream is UTF-8 by the
        SSE specification whatever its charset says, so it is decoded here). Every event is stamped with
        the time its last byte reached the host (``wire.read_ns``, the kernel's receive timestamp), so
        neither decoding nor the event loop's wait counts, and the body is read to its end after
        ``[DONE]`` so the connection goes back to the pool.
        """
        content_type = response.headers.get("content-type", "").partition(";")[0]
        if "text/event-stream" not in content_type:
            raise ProbeFailure("invalid_response", f"expected Content-Type text/event-stream, got {content_type!r}")
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        events = SSEParser()
        clock = recorder.clock
        done = False
        async for raw in response.aiter_bytes():
            if done:
                continue
            arrived_ns = wire.read_ns if wire.read_ns is not None else clock()
            text = utf8.decode(raw)
            if text:  # empty when ``raw`` ends inside a multi-byte character
                done = self._feed(events.feed(text), recorder, arrived_ns)
        if not done:
            tail = utf8.decode(b"", final=True)
            done = self._feed((events.feed(tail) if tail else []) + events.close(), recorder, clock())
        return done

    @staticmethod
    def _feed(events: list[SSEEvent], recorder: StreamRecorder, arrived_ns: int) -> bool:
        """Record the chunks of ``events``; ``True`` once ``[DONE]`` is seen (the rest is ignored)."""
        for event in events:
            data = event.data
            if data == "[DONE]":
                recorder.finish(arrived_ns)
                return True
            chunk = parse_chunk_payload(data)
            if chunk.timings is not None:
                recorder.server_timings = chunk.timings
            recorder.add(
                chunk.content,
                chunk.usage,
                arrived_ns,
                reasoning=chunk.reasoning,
                tool_call_indexes=chunk.tool_call_indexes,
            )
        return False

    def _secrets(self) -> list[str]:
        """The key and the extra header values: redacted from every error detail."""
        key = [self._api_key.get_secret_value()] if self._api_key is not None else []
        return key + self._header_values

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._fresh_client is not self._client:
            await self._fresh_client.aclose()

"""Cerebras through its own SDK (``cerebras-cloud-sdk``) streaming, reported like every other adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from cerebras.cloud.sdk import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncCerebras,
)
from pydantic import BaseModel, SecretStr

from tokenpulse.producers.adapters.openai import REQUEST_ID_HEADER
from tokenpulse.producers.adapters.wire import SocketReads, WireStamps, stamping, stamping_transport
from tokenpulse.producers.chunks import InvalidChunk, parse_chunk_document
from tokenpulse.producers.errors import ProbeFailure, failure_for_exception, failure_for_status, redact
from tokenpulse.producers.scheduler import sleep_until
from tokenpulse.producers.stream import ChatRequest, StreamRecorder


class CerebrasAdapter:
    """Streams chat completions with ``AsyncCerebras``; ``base_url`` is the host root (the SDK adds /v1).

    The SDK's httpx client gets the probe's own connections (``stamping_transport``), so a request is
    stamped sent when its bytes go to the socket and each chunk when its bytes reached the host, as with
    ``OpenAIAdapter``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | None,
        *,
        timeout: httpx.Timeout | None = None,
        max_connections: int = 1000,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._api_key = api_key
        self._header_values = [value for value in (extra_headers or {}).values() if value]
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.socket_reads = SocketReads()
        self._client = AsyncCerebras(
            api_key=api_key.get_secret_value() if api_key is not None else "unset",
            base_url=base_url.rstrip("/"),
            timeout=timeout or httpx.Timeout(connect=10.0, read=120.0, write=10.0, pool=None),
            max_retries=0,  # the scheduler owns retries and Retry-After, and a retry would hide a failure
            warm_tcp_connection=False,
            default_headers=dict(extra_headers or {}),
            http_client=httpx.AsyncClient(transport=stamping_transport(limits, reads=self.socket_reads)),
        )

    def __repr__(self) -> str:
        return f"CerebrasAdapter(base_url={str(self._client.base_url)!r}, api_key=***)"

    async def stream(self, request: ChatRequest, recorder: StreamRecorder) -> None:
        streaming = False
        wire = WireStamps(recorder.clock)
        try:
            if request.send_at_ns is not None:
                await sleep_until(request.send_at_ns, recorder.clock)
            recorder.mark_sent()  # replaced by the socket's stamp below (TLS handshake writes do not stamp)
            wire.sending = True
            with stamping(wire):
                response: Any = await self._client.chat.completions.create(
                    model=request.model,
                    messages=list(request.messages),  # type: ignore[arg-type]
                    extra_body=request.body_fields(),  # the token limit under the endpoint's name, and options
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers={REQUEST_ID_HEADER: request.request_id},
                )
                recorder.http_status = response.response.status_code
                streaming = True
                async for raw_chunk in response:
                    arrived_ns = wire.read_ns if wire.read_ns is not None else recorder.clock()
                    try:
                        chunk = parse_chunk_document(chunk_document(raw_chunk))
                    except InvalidChunk as exc:
                        raise ProbeFailure("invalid_response", str(exc)) from None
                    recorder.add(
                        chunk.content,
                        chunk.usage,
                        arrived_ns,
                        reasoning=chunk.reasoning,
                        tool_call_indexes=chunk.tool_call_indexes,
                    )
            # The SDK ends its iteration once it has read the body to its end; the stream ended when those
            # bytes reached the host, not when Python got round to it.
            recorder.finish(wire.read_ns)
        except ProbeFailure as exc:
            raise exc.redacted(self._secrets()) from None
        except APIStatusError as exc:
            recorder.http_status = exc.status_code
            raise failure_for_status(exc.status_code, exc.response.headers, self._redact(str(exc.body or ""))) from None
        except APITimeoutError:
            raise ProbeFailure("timeout", "read timeout (Cerebras SDK)") from None
        except APIConnectionError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            failure = failure_for_exception(cause, streaming=streaming)
            if failure.kind == "invalid_response":
                failure = ProbeFailure("connect", f"cannot connect: {type(cause).__name__}")
            raise failure.redacted(self._secrets()) from None
        except Exception as exc:
            raise failure_for_exception(exc, streaming=streaming).redacted(self._secrets()) from None
        finally:
            if wire.sent_ns is not None:
                recorder.sent_ns = wire.sent_ns

    def _secrets(self) -> list[str]:
        """The key and the extra header values: redacted from every error detail."""
        key = [self._api_key.get_secret_value()] if self._api_key is not None else []
        return key + self._header_values

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    async def aclose(self) -> None:
        await self._client.close()


def chunk_document(chunk: Any) -> Any:
    """The SDK's parsed chunk as the plain mapping it came from (fields of wrong types kept as sent).

    The SDK builds stream chunks without validation, as a model or (for some union members) a dict; its
    models keep unknown fields such as ``reasoning_content``.
    """
    if isinstance(chunk, BaseModel):
        return chunk.model_dump(mode="python", exclude_unset=True, warnings=False)
    return chunk

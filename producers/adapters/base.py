"""The interface every provider adapter implements."""

from __future__ import annotations

from typing import Protocol

from tokenpulse.producers.stream import ChatRequest, StreamRecorder


class ProviderAdapter(Protocol):
    """Sends one streamed chat completion and records every chunk.

    ``stream`` calls ``recorder.mark_sent()`` right before the request goes out, ``recorder.add`` for every
    stream event and ``recorder.finish()`` at the end; it raises ``ProbeFailure`` for anything that is not
    a complete stream. Implementations must never put the API key in an exception, log line or ``repr``.
    """

    async def stream(self, request: ChatRequest, recorder: StreamRecorder) -> None: ...

    async def aclose(self) -> None: ...

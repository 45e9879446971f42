"""Running one provider adapter request to its end, for adapter tests (with ``httpx.MockTransport``)."""

from __future__ import annotations

import asyncio

from tokenpulse.producers.adapters.openai import OpenAIAdapter
from tokenpulse.producers.stream import ChatRequest, StreamRecorder


def stream_to_end(adapter: OpenAIAdapter, request: ChatRequest, recorder: StreamRecorder) -> StreamRecorder:
    """``adapter.stream(request, recorder)`` on a fresh event loop, then close the adapter; returns ``recorder``."""

    async def go() -> None:
        try:
            await adapter.stream(request, recorder)
        finally:
            await adapter.aclose()

    asyncio.run(go())
    return recorder

"""The internal stream every provider adapter produces: (monotonic ns, text delta, usage).

Adapters differ in protocol (SSE over httpx, the Cerebras SDK); they all report into a ``StreamRecorder``
so the timing maths in ``producers.timing`` is shared and knows nothing about HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as reported by the server (``usage`` in the OpenAI protocol)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One received stream event: when it arrived, its text (possibly empty) and usage if it carried any."""

    t_ns: int
    delta: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion to send; ``request_id`` is forwarded so a simulator can record ground truth."""

    model: str
    messages: tuple[dict[str, str], ...]
    max_tokens: int
    request_id: str
    prompt_id: str = "prompt"


@dataclass(slots=True)
class StreamRecorder:
    """Collects what an adapter observed, stamped with ``clock`` (monotonic nanoseconds).

    ``on_first_content`` runs once, when the first chunk with non-empty text arrives (the probe uses it
    to switch from the first-token timeout to the total timeout).
    """

    clock: Callable[[], int]
    on_first_content: Callable[[], None] | None = None
    sent_ns: int | None = None
    http_status: int | None = None
    chunks: list[StreamChunk] = field(default_factory=list)
    finished_ns: int | None = None
    _seen_content: bool = False

    def mark_sent(self) -> int:
        """Record the moment the request is handed to the transport; returns it."""
        self.sent_ns = self.clock()
        return self.sent_ns

    def add(self, delta: str, usage: Usage | None = None, t_ns: int | None = None) -> None:
        """Record one received chunk, stamped ``t_ns`` (taken on arrival, before parsing) or now."""
        self.chunks.append(StreamChunk(self.clock() if t_ns is None else t_ns, delta, usage))
        if delta and not self._seen_content:
            self._seen_content = True
            if self.on_first_content is not None:
                self.on_first_content()

    def finish(self) -> None:
        """Record the end of the stream (``[DONE]`` or the connection closing cleanly)."""
        self.finished_ns = self.clock()

    @property
    def saw_content(self) -> bool:
        return self._seen_content

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
    cached_prompt_tokens: int | None = None
    """``usage.prompt_tokens_details.cached_tokens``: prompt tokens served from the server's prompt cache."""


@dataclass(frozen=True, slots=True)
class ServerTimings:
    """The server's own account of one request, where it reports one (llama.cpp's ``timings``).

    ``prefill_ms`` is the server's prompt processing, ``decode_ms`` its generation of the output tokens,
    ``cached_tokens`` the prompt tokens it reused from its cache. TTFT minus ``prefill_ms`` is queueing,
    network and the client's own time.
    """

    prefill_ms: float | None = None
    decode_ms: float | None = None
    cached_tokens: int | None = None
    prefill_tokens: int | None = None
    decode_tokens: int | None = None


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
    send_at_ns: int | None = None
    """Planned send time (monotonic ns) of an open-loop request: the adapter holds the request until then."""


@dataclass(slots=True)
class StreamRecorder:
    """Collects what an adapter observed, stamped with ``clock`` (monotonic nanoseconds).

    Chunks are kept column-wise (``times_ns``, ``deltas`` and the rare ``usages`` by chunk index) so that
    recording one costs two list appends; ``chunks`` gives them as ``StreamChunk`` objects.
    ``on_first_content`` runs once, when the first chunk with non-empty text arrives (the probe uses it
    to switch from the first-token timeout to the total timeout).
    """

    clock: Callable[[], int]
    on_first_content: Callable[[], None] | None = None
    sent_ns: int | None = None
    http_status: int | None = None
    times_ns: list[int] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    usages: dict[int, Usage] = field(default_factory=dict)
    finished_ns: int | None = None
    server_timings: ServerTimings | None = None
    """The last server-side timings the stream carried (``None`` if the server reports none)."""
    stale_connection_retries: int = 0
    """1 if the request was sent again on a fresh connection after a reused one turned out closed."""
    _seen_content: bool = False

    def mark_sent(self) -> int:
        """Record the moment the request is handed to the transport; returns it."""
        self.sent_ns = self.clock()
        return self.sent_ns

    def add(self, delta: str, usage: Usage | None = None, t_ns: int | None = None) -> None:
        """Record one received chunk, stamped ``t_ns`` (taken on arrival, before parsing) or now."""
        if usage is not None:
            self.usages[len(self.times_ns)] = usage
        self.times_ns.append(self.clock() if t_ns is None else t_ns)
        self.deltas.append(delta)
        if delta and not self._seen_content:
            self._seen_content = True
            if self.on_first_content is not None:
                self.on_first_content()

    def finish(self) -> None:
        """Record the end of the stream (``[DONE]`` or the connection closing cleanly)."""
        self.finished_ns = self.clock()

    @property
    def usage(self) -> Usage | None:
        """The usage of the last chunk that carried one (servers send it with or after the final delta)."""
        return self.usages[max(self.usages)] if self.usages else None

    @property
    def chunks(self) -> list[StreamChunk]:
        """Every recorded chunk in arrival order."""
        pairs = enumerate(zip(self.times_ns, self.deltas, strict=True))
        return [StreamChunk(t, delta, self.usages.get(i)) for i, (t, delta) in pairs]

    @property
    def saw_content(self) -> bool:
        return self._seen_content

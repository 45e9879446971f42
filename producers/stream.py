"""The internal stream every provider adapter produces: (monotonic ns, answer text, reasoning text, tool-call
fragments, usage).

Adapters differ in protocol (SSE over httpx, the Cerebras SDK); they all report into a ``StreamRecorder``
so the timing maths in ``producers.timing`` is shared and knows nothing about HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as reported by the server (``usage`` in the OpenAI protocol)."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int | None = None
    """``usage.prompt_tokens_details.cached_tokens``: prompt tokens served from the provider's prompt cache."""
    reasoning_tokens: int | None = None
    """``usage.completion_tokens_details.reasoning_tokens``: output tokens spent reasoning (part of completion)."""


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
    """One received stream event: when it arrived, its answer text (possibly empty), its reasoning text,
    the indexes of the tool calls it carried a fragment of, and usage if it carried any."""

    t_ns: int
    delta: str
    usage: Usage | None = None
    reasoning: str = ""
    tool_call_indexes: tuple[int, ...] = ()

    @property
    def is_answer(self) -> bool:
        """Content or a tool-call fragment: what a user or an agent waits for."""
        return bool(self.delta) or bool(self.tool_call_indexes)

    @property
    def is_output(self) -> bool:
        """Any output token: reasoning, content or a tool call (role-only and usage-only chunks are not)."""
        return bool(self.delta) or bool(self.reasoning) or bool(self.tool_call_indexes)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion to send; ``request_id`` is forwarded so a simulator can record ground truth."""

    model: str
    messages: tuple[dict[str, Any], ...]
    max_tokens: int
    request_id: str
    prompt_id: str = "prompt"
    send_at_ns: int | None = None
    """Planned send time (monotonic ns) of an open-loop request: the adapter holds the request until then."""
    max_tokens_param: str = "max_tokens"
    """The body field that carries ``max_tokens``: ``max_tokens`` or ``max_completion_tokens``."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Further body fields (sampling, reasoning effort, tools, extra_body), sent as they are."""

    def body_fields(self) -> dict[str, Any]:
        """The token limit under its field name, then ``options``."""
        return {self.max_tokens_param: self.max_tokens, **self.options}


@dataclass(slots=True)
class StreamRecorder:
    """Collects what an adapter observed, stamped with ``clock`` (monotonic nanoseconds).

    Chunks are kept column-wise (``times_ns``, ``deltas`` (answer text: content and tool-call names and
    arguments), ``reasoning`` (reasoning text), and the rare ``usages`` and ``tool_chunks`` by chunk index)
    so that recording one costs three list appends; ``chunks`` gives them as ``StreamChunk`` objects.
    ``on_first_content`` runs once, when the first chunk with output of any kind arrives (reasoning, content
    or a tool call; the probe uses it to switch from the first-token timeout to the total timeout).
    """

    clock: Callable[[], int]
    on_first_content: Callable[[], None] | None = None
    sent_ns: int | None = None
    http_status: int | None = None
    times_ns: list[int] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    usages: dict[int, Usage] = field(default_factory=dict)
    tool_chunks: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Chunk index -> indexes of the tool calls that chunk carried a fragment of."""
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

    def add(
        self,
        delta: str,
        usage: Usage | None = None,
        t_ns: int | None = None,
        *,
        reasoning: str = "",
        tool_call_indexes: tuple[int, ...] = (),
    ) -> None:
        """Record one received chunk, stamped ``t_ns`` (taken on arrival, before parsing) or now.

        ``delta`` is the answer text (content, and the names and argument fragments of tool calls),
        ``reasoning`` the reasoning text, ``tool_call_indexes`` the tool calls this chunk carried a fragment of.
        """
        index = len(self.times_ns)
        if usage is not None:
            self.usages[index] = usage
        if tool_call_indexes:
            self.tool_chunks[index] = tool_call_indexes
        self.times_ns.append(self.clock() if t_ns is None else t_ns)
        self.deltas.append(delta)
        self.reasoning.append(reasoning)
        if not self._seen_content and (delta or reasoning or tool_call_indexes):
            self._seen_content = True
            if self.on_first_content is not None:
                self.on_first_content()

    def finish(self, t_ns: int | None = None) -> None:
        """Record the end of the stream (``[DONE]`` or the connection closing cleanly), at ``t_ns`` (the arrival
        of the bytes that ended it) or now."""
        self.finished_ns = self.clock() if t_ns is None else t_ns

    @property
    def usage(self) -> Usage | None:
        """The usage of the last chunk that carried one (servers send it with or after the final delta)."""
        return self.usages[max(self.usages)] if self.usages else None

    @property
    def chunks(self) -> list[StreamChunk]:
        """Every recorded chunk in arrival order."""
        rows = enumerate(zip(self.times_ns, self.deltas, self.reasoning, strict=True))
        return [
            StreamChunk(t, delta, self.usages.get(i), reasoning, self.tool_chunks.get(i, ()))
            for i, (t, delta, reasoning) in rows
        ]

    @property
    def saw_content(self) -> bool:
        """Whether any output (reasoning, content or a tool call) has arrived."""
        return self._seen_content

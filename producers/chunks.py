"""One chat completion chunk (an OpenAI-style ``chat.completion.chunk`` object) as the probe records it.

Pure: the OpenAI adapter feeds it the decoded JSON of each ``data:`` payload, the Cerebras adapter the SDK's
parsed chunk as a plain mapping. Every kind of output is read:
- ``delta.content``: answer text;
- ``delta.reasoning_content`` (vLLM, DeepSeek, SGLang) or ``delta.reasoning`` (Groq, OpenRouter, Cerebras):
  reasoning text; when a server sends both with text, ``reasoning_content`` is taken (they repeat each other);
- ``delta.tool_calls``: tool-call fragments, each with its ``index``; names and argument fragments count as
  answer text;
- ``usage``, with ``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``.

A field of the wrong type raises ``InvalidChunk`` naming the field (the adapters turn it into an
``invalid_response`` failure): never a crash and never a silently wrong number.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from tokenpulse.producers.stream import ServerTimings, Usage


class InvalidChunk(ValueError):
    """A chunk that is not a chat completion chunk; the message names the field."""


class ParsedChunk(NamedTuple):
    """What one chunk carried: answer text, reasoning text, tool-call indexes and usage.

    A named tuple: one is built per streamed chunk, and a tuple builds in a fraction of a frozen dataclass's time.
    """

    content: str = ""
    reasoning: str = ""
    tool_call_indexes: tuple[int, ...] = ()
    usage: Usage | None = None
    timings: ServerTimings | None = None
    """The server's own timings (llama.cpp's ``timings`` object, on the usage chunk), if it sent any."""


EMPTY = ParsedChunk()


def parse_chunk_document(document: Any) -> ParsedChunk:
    """The output, usage and server timings of one decoded chunk; raises ``InvalidChunk`` naming the
    offending field."""
    if type(document) is not dict:
        raise InvalidChunk(f"stream chunk is not a JSON object but {type(document).__name__}")
    chunk = _parse_output(document)
    raw_timings = document.get("timings")
    if raw_timings is not None and (timings := parse_server_timings(raw_timings)) is not None:
        return chunk._replace(timings=timings)
    return chunk


def parse_server_timings(raw: Any) -> ServerTimings | None:
    """llama.cpp's ``timings``: ``prompt_n``/``prompt_ms`` (prefill), ``predicted_n``/``predicted_ms``
    (decode), ``cache_n`` (prompt tokens reused from the cache). Fields of the wrong type are left out;
    ``None`` when nothing usable is there."""
    if type(raw) is not dict:
        return None
    timings = ServerTimings(
        prefill_ms=_duration_ms(raw.get("prompt_ms")),
        decode_ms=_duration_ms(raw.get("predicted_ms")),
        cached_tokens=_timing_count(raw.get("cache_n")),
        prefill_tokens=_timing_count(raw.get("prompt_n")),
        decode_tokens=_timing_count(raw.get("predicted_n")),
    )
    return None if timings == ServerTimings() else timings


def _timing_count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _duration_ms(value: Any) -> float | None:
    if type(value) in (int, float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _parse_output(document: dict[str, Any]) -> ParsedChunk:
    choices = document.get("choices")
    if choices is None and "error" in document:
        raise InvalidChunk(f"error in stream: {str(document['error'])[:200]}")
    raw_usage = document.get("usage")
    usage = parse_usage(raw_usage) if raw_usage is not None else None
    if choices is not None and type(choices) is not list:
        raise InvalidChunk(f"choices is not a list but {type(choices).__name__}")
    if not choices:
        return ParsedChunk(usage=usage) if usage is not None else EMPTY
    choice = choices[0]
    if type(choice) is not dict:
        raise InvalidChunk(f"choices[0] is not an object but {type(choice).__name__}")
    fields = choice.get("delta")
    if fields is None:
        return ParsedChunk(usage=usage) if usage is not None else EMPTY
    if type(fields) is not dict:
        raise InvalidChunk(f"choices[0].delta is not an object but {type(fields).__name__}")
    content = fields.get("content")
    if (
        type(content) is str
        and usage is None
        and "reasoning_content" not in fields
        and "reasoning" not in fields
        and "tool_calls" not in fields
    ):
        return ParsedChunk(content)  # the common chunk: answer text only
    content = _text(fields, "content")
    reasoning = _text(fields, "reasoning_content") or _text(fields, "reasoning")
    raw_tools = fields.get("tool_calls")
    if raw_tools is None:
        if not reasoning and usage is None:
            return ParsedChunk(content) if content else EMPTY
        return ParsedChunk(content, reasoning, (), usage)
    indexes, tool_text = _tool_calls(raw_tools)
    return ParsedChunk(content + tool_text, reasoning, indexes, usage)


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if type(value) is not str:
        raise InvalidChunk(f"choices[0].delta.{name} is not a string but {type(value).__name__}")
    return value


def _tool_calls(raw: Any) -> tuple[tuple[int, ...], str]:
    if type(raw) is not list:
        raise InvalidChunk(f"choices[0].delta.tool_calls is not a list but {type(raw).__name__}")
    indexes: list[int] = []
    text: list[str] = []
    for position, call in enumerate(raw):
        where = f"choices[0].delta.tool_calls[{position}]"
        if type(call) is not dict:
            raise InvalidChunk(f"{where} is not an object but {type(call).__name__}")
        index = call.get("index")
        if index is None:
            raise InvalidChunk(f"{where}.index is missing: every tool-call fragment names the call it belongs to")
        if type(index) is not int or index < 0:
            raise InvalidChunk(f"{where}.index is not a whole number >= 0: {index!r}")
        indexes.append(index)
        function = call.get("function")
        if function is None:
            continue
        if type(function) is not dict:
            raise InvalidChunk(f"{where}.function is not an object but {type(function).__name__}")
        for name in ("name", "arguments"):
            value = function.get(name)
            if value is None:
                continue
            if type(value) is not str:
                raise InvalidChunk(f"{where}.function.{name} is not a string but {type(value).__name__}")
            text.append(value)
    return tuple(indexes), "".join(text)


def _count(raw: dict[str, Any], name: str, where: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise InvalidChunk(f"{where}{name} is not a whole number >= 0: {value!r}")
    return value


def _details(raw: dict[str, Any], name: str, count: str) -> int | None:
    details = raw.get(name)
    if details is None:
        return None
    if type(details) is not dict:
        raise InvalidChunk(f"usage.{name} is not an object but {type(details).__name__}")
    return _count(details, count, f"usage.{name}.")


def parse_usage(raw: Any) -> Usage | None:
    """``usage`` of a chunk; ``None`` without prompt and completion counts, ``InvalidChunk`` for wrong types."""
    if type(raw) is not dict:
        raise InvalidChunk(f"usage is not an object but {type(raw).__name__}")
    prompt = _count(raw, "prompt_tokens", "usage.")
    completion = _count(raw, "completion_tokens", "usage.")
    cached = _details(raw, "prompt_tokens_details", "cached_tokens")
    reasoning = _details(raw, "completion_tokens_details", "reasoning_tokens")
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion, cached, reasoning)

"""Workload files (YAML): which endpoints to probe, with which prompts, on which schedule.

``load_workload(path)`` validates the file and raises ``WorkloadError`` naming the field and the fix.
API keys are never in the file: an endpoint names the environment variable that holds its key.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.timing import Prices
from tokenpulse.yamlfile import read_yaml_mapping

_FIXES: dict[str, str] = {
    "kind": "use 'openai' (any OpenAI-compatible API) or 'cerebras'",
    "base_url": "write the API root, e.g. https://api.groq.com/openai/v1",
    "api_key_env": "name an environment variable such as GROQ_API_KEY; never put the key itself in the file",
    "schedule": "use {kind: closed, concurrency: 4} or {kind: open, rate_per_s: 5}",
    "concurrency": "a whole number >= 1",
    "rate_per_s": "a number of requests per second > 0",
    "prompts": "give one of inline: [...], file: prompts.jsonl or synthetic: {count, input_tokens, output_tokens}",
    "prices": "a list like [{effective_from: 2026-01-01, input_per_mtok: 0.6, output_per_mtok: 2.4}]",
    "requests": "give requests: N or duration_s: S (or both; whichever ends first)",
    "duration_s": "give requests: N or duration_s: S (or both; whichever ends first)",
    "endpoints": "list at least one endpoint with name, kind, base_url and model",
    "max_tokens": "a whole number >= 1",
    "max_tokens_param": "use 'max_tokens' or 'max_completion_tokens' (OpenAI's reasoning models need the latter)",
    "role": "give every message a role: system, developer, user, assistant or tool",
    "id": "an id of 1-200 letters, digits or _.:/@+- characters",
    "reasoning_effort": "use minimal, low, medium or high",
    "extra_body": "a mapping of request fields passed through as they are, e.g. {top_k: 20}",
    "extra_headers": "a mapping of header name to value, e.g. {X-Org: team-a}",
    "tools": "a list like [{type: function, function: {name: get_weather, parameters: {...}}}]",
}
MAX_PROMPT_ID = 200
_RESERVED_BODY_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/@+-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceEntry(_Strict):
    """Prices in USD per million tokens, valid from ``effective_from`` until the next entry."""

    effective_from: dt.date
    input_per_mtok: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    output_per_mtok: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    cached_input_per_mtok: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = Field(
        None, description="cached prompt tokens; defaults to input_per_mtok"
    )
    reasoning_output_per_mtok: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = Field(
        None, description="reasoning output tokens; defaults to output_per_mtok"
    )


class RequestOptions(_Strict):
    """Sampling and request fields sent with every chat completion (unset ones are not sent).

    Given per endpoint and per prompt; a prompt's options win over its endpoint's, field by field.
    ``extra_body`` is passed through as it is, after the named fields (provider-specific knobs such as
    ``top_k`` or ``chat_template_kwargs``).
    """

    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    seed: int | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    stop: Annotated[str, Field(min_length=1)] | Annotated[tuple[str, ...], Field(min_length=1, max_length=4)] | None = (
        None
    )
    tools: Annotated[tuple[dict[str, Any], ...], Field(min_length=1)] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tools")
    @classmethod
    def _tools_are_functions(cls, tools: tuple[dict[str, Any], ...] | None) -> tuple[dict[str, Any], ...] | None:
        for index, tool in enumerate(tools or ()):
            function = tool.get("function")
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                raise ValueError(f"tool {index} needs type: function and function.name")
        return tools

    @field_validator("extra_body")
    @classmethod
    def _no_reserved_fields(cls, body: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(_RESERVED_BODY_FIELDS & set(body))
        if reserved:
            raise ValueError(f"extra_body must not set {reserved}: the probe sends those itself")
        return body

    def merged(self, override: RequestOptions | None) -> RequestOptions:
        """These options with every field ``override`` sets replacing ours (``extra_body`` merged by key)."""
        if override is None:
            return self
        update = {name: getattr(override, name) for name in override.model_fields_set if name != "extra_body"}
        update["extra_body"] = {**self.extra_body, **override.extra_body}
        return self.model_copy(update=update)

    def body_fields(self) -> dict[str, Any]:
        """The JSON body fields these options add to a request."""
        fields = self.model_dump(exclude_none=True, exclude={"extra_body"})
        if isinstance(fields.get("stop"), tuple):
            fields["stop"] = list(fields["stop"])
        if "tools" in fields:
            fields["tools"] = list(fields["tools"])
        return {**fields, **self.extra_body}


class Endpoint(_Strict):
    """One model behind one API to probe."""

    name: Identifier
    kind: Literal["openai", "cerebras"]
    provider: Identifier | None = Field(None, description="provider label in events; defaults to the name")
    base_url: str
    model: Annotated[str, Field(min_length=1, max_length=200)]
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    region: str | None = None
    prices: tuple[PriceEntry, ...] = ()
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="OpenAI's reasoning models reject max_tokens and need max_completion_tokens"
    )
    options: RequestOptions = RequestOptions()
    extra_headers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")], SecretStr] = Field(
        default_factory=dict, description="sent with every request; values never appear in events, logs or errors"
    )

    @field_validator("extra_headers")
    @classmethod
    def _headers_are_not_the_key(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        taken = sorted(name for name in headers if name.lower() in ("authorization", "content-type"))
        if taken:
            raise ValueError(f"extra_headers must not set {taken}: the key comes from api_key_env")
        return headers

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        if "@" in value.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("credentials in the URL are not allowed")
        return value.rstrip("/")

    @property
    def provider_label(self) -> str:
        return self.provider or self.name

    def prices_on(self, day: dt.date) -> Prices:
        """The prices in force on ``day`` (the latest entry that is not in the future); zero if none."""
        current = [p for p in self.prices if p.effective_from <= day]
        if not current:
            return Prices()
        latest = max(current, key=lambda p: p.effective_from)
        return Prices(
            latest.input_per_mtok,
            latest.output_per_mtok,
            latest.cached_input_per_mtok,
            latest.reasoning_output_per_mtok,
        )


class Message(_Strict):
    """One chat message; ``content`` may be empty only for an assistant message with tool calls."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1)] | None = None
    tool_calls: tuple[dict[str, Any], ...] | None = None

    @model_validator(mode="after")
    def _has_content(self) -> Message:
        if not self.content and not self.tool_calls:
            raise ValueError(f"a {self.role} message needs non-empty content")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs tool_call_id")
        return self

    def as_json(self) -> dict[str, Any]:
        document = self.model_dump(exclude_none=True)
        if "tool_calls" in document:
            document["tool_calls"] = list(document["tool_calls"])
        return document


class InlinePrompt(_Strict):
    """A prompt: ``text`` (one user message) or ``messages`` (a conversation, system prompt included)."""

    id: Identifier
    text: Annotated[str, Field(min_length=1)] | None = None
    messages: Annotated[tuple[Message, ...], Field(min_length=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    options: RequestOptions | None = None

    @model_validator(mode="after")
    def _text_or_messages(self) -> InlinePrompt:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give text (one user message) or messages (a list of {role, content}), not both")
        return self

    def to_prompt(self) -> Prompt:
        if self.messages is not None:
            messages = tuple(m.as_json() for m in self.messages)
        else:
            messages = ({"role": "user", "content": self.text or ""},)
        return Prompt(id=self.id, messages=messages, max_tokens=self.max_tokens, options=self.options)


class PromptLine(_Strict):
    """One line of a JSONL prompt file: ``prompt`` (text) or ``messages``; ``id`` defaults to ``line<N>``."""

    id: Identifier | None = None
    prompt: Annotated[str, Field(min_length=1)] | None = None
    messages: Annotated[tuple[Message, ...], Field(min_length=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    options: RequestOptions | None = None

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> PromptLine:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give prompt (text) or messages (a list of {role, content}), not both")
        return self


class SyntheticPrompts(_Strict):
    """Generated prompts of about ``input_tokens`` tokens each, asking for ``output_tokens``."""

    count: Annotated[int, Field(ge=1, le=100_000)] = 16
    input_tokens: Annotated[int, Field(ge=1, le=1_000_000)]
    output_tokens: Annotated[int, Field(ge=1, le=1_000_000)]
    seed: int = 0


class Prompts(_Strict):
    inline: tuple[InlinePrompt | str, ...] | None = None
    file: Path | None = None
    synthetic: SyntheticPrompts | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Prompts:
        given = [name for name in ("inline", "file", "synthetic") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one prompt source, got {given or 'none'}")
        if self.inline is not None and not self.inline:
            raise ValueError("inline prompts must not be empty")
        return self


class ClosedSchedule(_Strict):
    """``concurrency`` requests always in flight; the next starts when one ends."""

    kind: Literal["closed"]
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 1


class OpenSchedule(_Strict):
    """Poisson arrivals at ``rate_per_s``, independent of responses, so a slow server cannot slow the probe."""

    kind: Literal["open"]
    rate_per_s: Annotated[float, Field(gt=0.0, le=100_000.0, allow_inf_nan=False)]
    seed: int | None = None


class Timeouts(_Strict):
    connect_s: Annotated[float, Field(gt=0.0)] = 10.0
    first_token_s: Annotated[float, Field(gt=0.0)] = 60.0
    total_s: Annotated[float, Field(gt=0.0)] = 300.0


class Workload(_Strict):
    """A validated workload file."""

    name: Identifier
    probe_id: Identifier | None = None
    endpoints: Annotated[tuple[Endpoint, ...], Field(min_length=1)]
    prompts: Prompts
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    schedule: Annotated[ClosedSchedule | OpenSchedule, Field(discriminator="kind")] = ClosedSchedule(
        kind="closed", concurrency=1
    )
    requests: Annotated[int, Field(ge=1)] | None = Field(None, description="measured requests per endpoint")
    duration_s: Annotated[float, Field(gt=0.0)] | None = None
    warmup_requests: Annotated[int, Field(ge=0)] = 0
    max_retry_after_s: Annotated[float, Field(ge=0.0)] = 60.0
    timeouts: Timeouts = Timeouts()
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounded(self) -> Workload:
        if self.requests is None and self.duration_s is None:
            raise ValueError("the workload never ends: give requests or duration_s")
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique, got {names}")
        return self


class Prompt(BaseModel):
    """A prompt ready to send."""

    model_config = ConfigDict(frozen=True)
    id: str
    messages: tuple[dict[str, Any], ...]
    max_tokens: int | None = None
    options: RequestOptions | None = None

    @property
    def text(self) -> str:
        return "\n".join(m.get("content") or "" for m in self.messages)


def request_body_fields(endpoint: Endpoint, prompt: Prompt, max_tokens: int) -> dict[str, Any]:
    """The body fields of one request beyond model, messages and streaming: the token limit under the name
    the endpoint takes, then the endpoint's options with the prompt's over them."""
    return {endpoint.max_tokens_param: max_tokens, **endpoint.options.merged(prompt.options).body_fields()}


def header_values(endpoint: Endpoint) -> Mapping[str, str]:
    """The endpoint's extra headers in clear, for the adapter only (never log the result)."""
    return {name: value.get_secret_value() for name, value in endpoint.extra_headers.items()}


def load_workload(path: Path) -> Workload:
    """Read and validate a workload YAML file."""
    document = read_yaml_mapping(path, "workload file", WorkloadError, "name, endpoints, prompts, schedule")
    workload = parse_workload(document, source=str(path))
    if workload.prompts.file is not None and not workload.prompts.file.is_absolute():
        resolved = Prompts(file=path.parent / workload.prompts.file)
        workload = workload.model_copy(update={"prompts": resolved})
    return workload


def parse_workload(document: dict[str, object], source: str = "workload") -> Workload:
    """Validate an already-parsed workload mapping."""
    try:
        return Workload.model_validate(document)
    except ValidationError as exc:
        raise WorkloadError(describe_validation_error(exc, source)) from None


def describe_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors(include_url=False)[:5]:
        loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-", "tagged-union"))]
        where = ".".join(loc) or "(top level)"
        fix = next((_FIXES[p] for p in reversed(loc) if p in _FIXES), None)
        message = f"{source}: field '{where}': {error['msg']}"
        lines.append(message + (f"; fix: {fix}" if fix else ""))
    return "\n".join(lines)


def load_prompts(prompts: Prompts) -> list[Prompt]:
    """The prompts of a workload, in a stable order."""
    if prompts.inline is not None:
        result = []
        for index, item in enumerate(prompts.inline):
            if isinstance(item, str):
                result.append(Prompt(id=f"p{index}", messages=({"role": "user", "content": item},)))
            else:
                result.append(item.to_prompt())
        return _unique_ids(result, "prompts.inline")

    if prompts.file is not None:
        return _prompts_from_jsonl(prompts.file)
    assert prompts.synthetic is not None
    return synthetic_prompts(prompts.synthetic)


def _prompts_from_jsonl(path: Path) -> list[Prompt]:
    """Every line validated before any request is sent; the first bad line is named with its field."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise WorkloadError(f"prompts.file {path}: {exc.strerror}; fix the path (relative to the workload)") from None
    result = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"prompts.file {path} line {number}"
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise WorkloadError(f"{where}: not JSON; write one object per line") from None
        if not isinstance(row, dict):
            raise WorkloadError(f"{where}: expected an object with 'prompt' or 'messages'")
        try:
            parsed = PromptLine.model_validate(row)
        except ValidationError as exc:
            raise WorkloadError(describe_validation_error(exc, where)) from None
        if parsed.messages is not None:
            messages = tuple(m.as_json() for m in parsed.messages)
        else:
            messages = ({"role": "user", "content": parsed.prompt or ""},)
        result.append(
            Prompt(
                id=parsed.id or f"line{number}",
                messages=messages,
                max_tokens=parsed.max_tokens,
                options=parsed.options,
            )
        )
    if not result:
        raise WorkloadError(f"prompts.file {path} has no prompts; add one JSON object per line")
    return _unique_ids(result, f"prompts.file {path}")


def _unique_ids(prompts: list[Prompt], source: str) -> list[Prompt]:
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.id in seen:
            raise WorkloadError(f"{source}: prompt id {prompt.id!r} is used twice; give every prompt its own id")
        seen.add(prompt.id)
    return prompts


_WORDS = [
    "latency",
    "token",
    "stream",
    "model",
    "endpoint",
    "probe",
    "kafka",
    "window",
    "sketch",
    "alert",
    "region",
    "price",
    "budget",
    "cache",
    "queue",
    "batch",
    "decode",
    "prefill",
    "context",
    "answer",
    "question",
    "summary",
    "detail",
    "reason",
    "example",
    "measure",
]


def synthetic_prompts(spec: SyntheticPrompts) -> list[Prompt]:
    """Deterministic prompts of about ``input_tokens`` tokens (one common word is about one token)."""
    rng = random.Random(spec.seed)
    result = []
    for index in range(spec.count):
        words = " ".join(rng.choice(_WORDS) for _ in range(spec.input_tokens))
        messages = ({"role": "user", "content": words},)
        result.append(Prompt(id=f"syn{index}", messages=messages, max_tokens=spec.output_tokens))
    return result

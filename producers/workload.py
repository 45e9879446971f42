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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tokenpulse.durations import DurationError, parse_duration_ns
from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.timing import Prices
from tokenpulse.volume import ProductionVolume
from tokenpulse.yamlfile import read_yaml_mapping

_ENDS = "give requests: N or duration_s: S (or both; whichever ends first), or run it with tokenpulse monitor"
_FIXES: dict[str, str] = {
    "kind": "use 'openai' (any OpenAI-compatible API) or 'cerebras'",
    "base_url": "write the API root, e.g. https://api.groq.com/openai/v1",
    "api_key_env": "name an environment variable such as GROQ_API_KEY; never put the key itself in the file",
    "schedule": "use {kind: closed, concurrency: 4}, {kind: open, rate_per_s: 5} or "
    "{kind: periodic, every: 5m, requests: 3, jitter: 30s}",
    "every": "a duration such as 30s, 5m or 1h (the period between bursts)",
    "jitter": "a duration such as 0s or 30s, shorter than every",
    "concurrency": "a whole number >= 1",
    "rate_per_s": "a number of requests per second > 0",
    "prompts": "give one of inline: [...], file: prompts.jsonl or synthetic: {count, input_tokens, output_tokens}",
    "prices": "a list like [{effective_from: 2026-01-01, input_per_mtok: 0.6, output_per_mtok: 2.4}]",
    "requests": _ENDS,
    "duration_s": _ENDS,
    "endpoints": "list at least one endpoint with name, kind, base_url and model",
    "max_tokens": "a whole number >= 1",
    "max_tokens_param": "use 'max_tokens' or 'max_completion_tokens' (OpenAI's reasoning models need the latter)",
    "role": "give every message a role: system, developer, user, assistant or tool",
    "id": "an id of 1-200 letters, digits or _.:/@+- characters",
    "reasoning_effort": "use minimal, low, medium or high",
    "extra_body": "a mapping of request fields passed through as they are, e.g. {top_k: 20}",
    "extra_headers": "a mapping of header name to value, e.g. {X-Org: team-a}",
    "production": "give {requests_per_day: N} or {tokens_per_day: N}",
    "tools": "a list like [{type: function, function: {name: get_weather, parameters: {...}}}]",
    "backoff": "use {initial: 500ms, max: 30s, breaker_after: 5}",
    "initial": "a duration such as 500ms or 1s",
    "max": "a duration such as 30s or 5m",
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
    unique: bool = Field(
        False, description="start each prompt with a fresh random nonce (in place of its first word): no cache hit"
    )


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


class PeriodicSchedule(_Strict):
    """A burst of ``requests`` every ``every`` (at most ``concurrency`` in flight), each burst moved by a random
    delay in ``[0, jitter]`` so that many probes do not hit a provider at the same instant."""

    kind: Literal["periodic"]
    every: str
    requests: Annotated[int, Field(ge=1, le=10_000)] = 1
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 1
    jitter: str = "0s"
    seed: int | None = None

    @field_validator("every", "jitter")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration_ns(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _jitter_within_period(self) -> PeriodicSchedule:
        if self.every_ns <= 0:
            raise ValueError("every must be longer than 0")
        if self.jitter_ns >= self.every_ns:
            raise ValueError(f"jitter {self.jitter} must be shorter than every {self.every}")
        return self

    @property
    def every_ns(self) -> int:
        return parse_duration_ns(self.every)

    @property
    def jitter_ns(self) -> int:
        return parse_duration_ns(self.jitter)


class BackoffSpec(_Strict):
    """After an error, hold the endpoint back ``initial`` doubling up to ``max`` (with jitter); after
    ``breaker_after`` errors in a row the circuit opens: one trial request at a time until one succeeds."""

    initial: str = "500ms"
    max: str = "30s"
    breaker_after: Annotated[int, Field(ge=1, le=1000)] = 5

    @field_validator("initial", "max")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration_ns(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def initial_ns(self) -> int:
        return parse_duration_ns(self.initial)

    @property
    def max_ns(self) -> int:
        return max(self.initial_ns, parse_duration_ns(self.max))


Schedule = Annotated[ClosedSchedule | OpenSchedule | PeriodicSchedule, Field(discriminator="kind")]


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
    schedule: Schedule = ClosedSchedule(kind="closed", concurrency=1)
    requests: Annotated[int, Field(ge=1)] | None = Field(None, description="measured requests per endpoint")
    duration_s: Annotated[float, Field(gt=0.0)] | None = None
    warmup_requests: Annotated[int, Field(ge=0)] = 0
    max_retry_after_s: Annotated[float, Field(ge=0.0)] = 60.0
    backoff: BackoffSpec = BackoffSpec()
    timeouts: Timeouts = Timeouts()
    tags: dict[str, str] = Field(default_factory=dict)
    unique_prefix: bool = Field(
        False, description="start every prompt with a fresh random nonce so no provider cache can answer it"
    )
    production: ProductionVolume | None = Field(
        None, description="the traffic this workload stands for; tokenpulse trends -w projects a month's cost at it"
    )

    @model_validator(mode="after")
    def _bounded(self, info: ValidationInfo) -> Workload:
        continuous = bool(info.context and info.context.get("continuous"))
        if self.requests is None and self.duration_s is None and not continuous:
            raise ValueError(
                "the workload never ends: give requests or duration_s, or run it continuously with tokenpulse monitor"
            )
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
    unique: bool = False
    """Sent with a fresh nonce each time (``with_nonce``)."""
    replace_first_word: bool = False
    """The nonce takes the place of the first word (synthetic prompts keep their declared token count)."""

    @property
    def text(self) -> str:
        return "\n".join(m.get("content") or "" for m in self.messages)

    def with_nonce(self, nonce: str) -> Prompt:
        """This prompt with ``nonce`` at the start of its last user message (in place of the first word for a
        synthetic prompt, so its token count stays as declared)."""
        messages = list(self.messages)
        for index in range(len(messages) - 1, -1, -1):
            if messages[index].get("role") == "user":
                break
        else:
            index = len(messages) - 1
        content = messages[index].get("content") or ""
        if self.replace_first_word:
            rest = content.split(" ", 1)
            content = nonce + (" " + rest[1] if len(rest) > 1 else "")
        else:
            content = f"{nonce} {content}"
        messages[index] = {**messages[index], "content": content}
        return self.model_copy(update={"messages": tuple(messages)})


def request_body_fields(endpoint: Endpoint, prompt: Prompt, max_tokens: int) -> dict[str, Any]:
    """The body fields of one request beyond model, messages and streaming: the token limit under the name
    the endpoint takes, then the endpoint's options with the prompt's over them."""
    return {endpoint.max_tokens_param: max_tokens, **endpoint.options.merged(prompt.options).body_fields()}


def header_values(endpoint: Endpoint) -> Mapping[str, str]:
    """The endpoint's extra headers in clear, for the adapter only (never log the result)."""
    return {name: value.get_secret_value() for name, value in endpoint.extra_headers.items()}


def new_nonce(rng: random.Random | None = None) -> str:
    """A random 64-bit nonce as 16 hex digits: one whitespace-separated word, never seen by a cache before."""
    bits = rng.getrandbits(64) if rng is not None else random.SystemRandom().getrandbits(64)
    return f"{bits:016x}"


def load_workload(path: Path, *, continuous: bool = False) -> Workload:
    """Read and validate a workload YAML file; ``continuous`` (the monitor) lets it run without an end."""
    document = read_yaml_mapping(path, "workload file", WorkloadError, "name, endpoints, prompts, schedule")
    workload = parse_workload(document, source=str(path), continuous=continuous)
    if workload.prompts.file is not None and not workload.prompts.file.is_absolute():
        resolved = Prompts(file=path.parent / workload.prompts.file)
        workload = workload.model_copy(update={"prompts": resolved})
    return workload


def parse_workload(document: dict[str, object], source: str = "workload", *, continuous: bool = False) -> Workload:
    """Validate an already-parsed workload mapping; ``continuous`` allows one with no requests/duration_s."""
    try:
        return Workload.model_validate(document, context={"continuous": continuous})
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


def load_prompts(prompts: Prompts, *, unique_prefix: bool = False) -> list[Prompt]:
    """The prompts of a workload, in a stable order; ``unique_prefix`` marks every one for a nonce."""
    loaded = _load_prompts(prompts)
    if unique_prefix:
        return [p.model_copy(update={"unique": True}) for p in loaded]
    return loaded


def workload_prompts(workload: Workload) -> list[Prompt]:
    """The prompts of ``workload`` with its ``unique_prefix`` applied."""
    return load_prompts(workload.prompts, unique_prefix=workload.unique_prefix)


def _load_prompts(prompts: Prompts) -> list[Prompt]:
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
        result.append(
            Prompt(
                id=f"syn{index}",
                messages=messages,
                max_tokens=spec.output_tokens,
                unique=spec.unique,
                replace_first_word=True,
            )
        )
    return result

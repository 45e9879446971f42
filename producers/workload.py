"""Workload files (YAML): which endpoints to probe, with which prompts, on which schedule.

``load_workload(path)`` validates the file and raises ``WorkloadError`` naming the field and the fix.
API keys are never in the file: an endpoint names the environment variable that holds its key.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
}

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


class InlinePrompt(_Strict):
    id: Identifier
    text: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None


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
    messages: tuple[dict[str, str], ...]
    max_tokens: int | None = None

    @property
    def text(self) -> str:
        return "\n".join(m.get("content", "") for m in self.messages)


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
                messages = ({"role": "user", "content": item.text},)
                result.append(Prompt(id=item.id, messages=messages, max_tokens=item.max_tokens))
        return result
    if prompts.file is not None:
        return _prompts_from_jsonl(prompts.file)
    assert prompts.synthetic is not None
    return synthetic_prompts(prompts.synthetic)


def _prompts_from_jsonl(path: Path) -> list[Prompt]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise WorkloadError(f"prompts.file {path}: {exc.strerror}; fix the path (relative to the workload)") from None
    result = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise WorkloadError(f"prompts.file {path} line {number}: not JSON; write one object per line") from None
        if not isinstance(row, dict):
            raise WorkloadError(f"prompts.file {path} line {number}: expected an object with 'prompt' or 'messages'")
        if isinstance(row.get("messages"), list):
            messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"])
        elif isinstance(row.get("prompt"), str):
            messages = ({"role": "user", "content": row["prompt"]},)
        else:
            raise WorkloadError(f"prompts.file {path} line {number}: needs 'prompt' (text) or 'messages' (list)")
        max_tokens = row.get("max_tokens")
        result.append(
            Prompt(
                id=str(row.get("id", f"line{number}")),
                messages=messages,
                max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None,
            )
        )
    if not result:
        raise WorkloadError(f"prompts.file {path} has no prompts; add one JSON object per line")
    return result


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

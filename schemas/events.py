"""Events that cross a Kafka topic: ``RequestTiming``, ``WindowStats`` and ``Alert``.

These models are the public contract of DESIGN.md. Fields may be added in a later schema version; none is
removed. Every model is strict: unknown fields, NaN or infinite numbers, negative durations and naive
timestamps are rejected, so a consumer either gets a valid event or a clear reason to dead-letter it.
"""

from __future__ import annotations

import functools
import itertools
import math
import uuid
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tokenpulse.schemas.timestamps import UtcNanos

SCHEMA_VERSION: Literal[1] = 1

Status = Literal["ok", "error"]
ErrorKind = Literal["timeout", "connect", "http_429", "http_4xx", "http_5xx", "stream_broken", "invalid_response"]
Severity = Literal["warning", "critical"]
AlertState = Literal["firing", "resolved"]

DurationMs = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=True)


class RequestTiming(_Event):
    """One probed request: what was asked, what came back, and how long every part took."""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="idempotency key")
    schema_version: Literal[1] = SCHEMA_VERSION
    probe_id: Name
    started_at: UtcNanos = Field(description="when the request was sent, UTC")
    provider: Name
    model: Name
    endpoint: Annotated[str, Field(max_length=2000)] = Field(description="scheme://host/path, no credentials")
    region: str | None = None
    workload: Name
    prompt_id: Name
    prompt_nonce: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="random nonce put at the start of the prompt so no cache answers it (unique prompts)"
    )
    status: Status
    error_kind: ErrorKind | None = None
    error_detail: Annotated[str, Field(max_length=500)] | None = None
    http_status: Annotated[int, Field(ge=100, le=599)] | None = None
    ttft_ms: DurationMs | None = Field(
        None, description="request sent to the first output token of any kind: reasoning, content or tool call"
    )
    ttfa_ms: DurationMs | None = Field(
        None, description="request sent to the first answer token: content or a tool call (added in 2026)"
    )
    reasoning_ms: DurationMs | None = Field(
        None, description="first reasoning token to first answer token; null without a reasoning phase"
    )
    e2e_ms: DurationMs
    tpot_ms: DurationMs | None = Field(
        None, description="(e2e - ttft) / (completion_tokens - 1), over all output tokens, reasoning included"
    )
    itl_p50_ms: DurationMs | None = None
    itl_p95_ms: DurationMs | None = None
    itl_max_ms: DurationMs | None = None
    decode_tps: NonNegative | None = None
    prompt_tokens: TokenCount = 0
    cached_prompt_tokens: TokenCount = Field(0, description="prompt tokens the provider served from its cache")
    completion_tokens: TokenCount = Field(0, description="all output tokens, reasoning included")
    reasoning_tokens: TokenCount = Field(0, description="output tokens spent reasoning (part of completion_tokens)")
    tool_calls: TokenCount = Field(0, description="tool calls in the answer")
    token_count_source: Literal["usage", "estimated"] = "estimated"
    price_in_per_mtok: NonNegative = 0.0
    price_cached_in_per_mtok: NonNegative | None = Field(None, description="null: cached input at the input price")
    price_out_per_mtok: NonNegative = 0.0
    price_reasoning_out_per_mtok: NonNegative | None = Field(
        None, description="null: reasoning output at the output price"
    )
    cost_usd: NonNegative = Field(0.0, description="what the provider bills; 0 without usage and without output")
    schedule_lag_ms: Annotated[float, Field(allow_inf_nan=False)] | None = Field(
        None, description="open-loop schedules: actual minus planned send time"
    )
    tags: dict[str, str] = Field(default_factory=dict)
    server_prefill_ms: DurationMs | None = Field(
        default=None, description="the server's own prompt processing time, where it reports one (llama.cpp timings)"
    )
    server_decode_ms: DurationMs | None = Field(
        default=None, description="the server's own generation time of the output"
    )
    server_cached_tokens: TokenCount | None = Field(
        default=None, description="prompt tokens the server reports reusing from its prompt cache"
    )
    stale_connection_retry: bool = Field(
        default=False,
        description="the request was sent again on a fresh connection after a reused keep-alive connection turned "
        "out closed before any response byte; its timings are those of the second send",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_has_no_credentials(cls, value: str) -> str:
        return _checked_endpoint(value)

    @model_validator(mode="after")
    def _consistent(self) -> RequestTiming:
        if self.status == "ok" and self.error_kind is not None:
            raise ValueError("status 'ok' must not carry an error_kind")
        if self.status == "error" and self.error_kind is None:
            raise ValueError("status 'error' needs an error_kind")
        if self.ttft_ms is not None and self.ttft_ms > self.e2e_ms:
            raise ValueError(f"ttft_ms ({self.ttft_ms}) must not exceed e2e_ms ({self.e2e_ms})")
        if self.ttfa_ms is not None:
            if self.ttfa_ms > self.e2e_ms:
                raise ValueError(f"ttfa_ms ({self.ttfa_ms}) must not exceed e2e_ms ({self.e2e_ms})")
            if self.ttft_ms is None or self.ttfa_ms < self.ttft_ms:
                raise ValueError(f"ttfa_ms ({self.ttfa_ms}) needs a ttft_ms at or before it, got {self.ttft_ms}")
        if self.cached_prompt_tokens > self.prompt_tokens:
            raise ValueError("cached_prompt_tokens must not exceed prompt_tokens")
        if self.reasoning_tokens > self.completion_tokens:
            raise ValueError("reasoning_tokens must not exceed completion_tokens (they are part of them)")
        return self

    def kafka_key(self) -> bytes:
        return f"{self.provider}/{self.model}".encode()


@functools.lru_cache(maxsize=1024)  # a deployment probes few endpoints; every event repeats one of them
def _checked_endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be an http(s) URL: scheme://host/path")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("endpoint must be scheme://host/path only: no user info, query or fragment")
    return value


class Quantiles(_Event):
    """A distribution summary; all values in the unit of the metric it belongs to."""

    p50: NonNegative
    p95: NonNegative
    p99: NonNegative
    max: NonNegative

    @model_validator(mode="after")
    def _ordered(self) -> Quantiles:
        # Sketch quantiles are monotone; allow a relative wobble of 1e-9 for float rounding.
        values = [self.p50, self.p95, self.p99, self.max]
        for low, high in itertools.pairwise(values):
            if low > high and not math.isclose(low, high, rel_tol=1e-9):
                raise ValueError(f"quantiles must be ordered p50 <= p95 <= p99 <= max, got {values}")
        return self


class WindowStats(_Event):
    """Aggregates of one key over one closed event-time window."""

    schema_version: Literal[1] = SCHEMA_VERSION
    provider: Name
    model: Name
    workload: Name
    region: str | None = None
    window: Annotated[str, Field(pattern=r"^\d+[smhd]$")] = Field(description="window size, e.g. 1m, 5m")
    window_start: UtcNanos
    window_end: UtcNanos
    count: TokenCount
    error_count: TokenCount
    error_rate: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    ttft_ms: Quantiles | None = Field(default=None, description="over successful requests only")
    ttfa_ms: Quantiles | None = Field(default=None, description="over successful requests only")
    e2e_ms: Quantiles | None = Field(default=None, description="over successful requests only")
    tpot_ms: Quantiles | None = Field(default=None, description="over successful requests only")
    decode_tps_p50: NonNegative | None = Field(default=None, description="over successful requests only")
    prompt_tokens: TokenCount = 0
    cached_prompt_tokens: TokenCount = 0
    completion_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    cache_hit_ratio: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        default=None, description="cached_prompt_tokens / prompt_tokens; null without prompt tokens"
    )
    reasoning_share: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        default=None, description="reasoning_tokens / completion_tokens; null without completion tokens"
    )
    cost_usd: NonNegative = 0.0
    cost_per_1k_tokens: NonNegative | None = None
    projected_30d_cost_usd: NonNegative = 0.0
    late_events: TokenCount = 0
    server_prefill_ms_p95: NonNegative | None = Field(
        default=None, description="p95 of the server's own prefill time, over requests whose server reported it"
    )
    server_decode_ms_p95: NonNegative | None = Field(default=None, description="p95 of the server's own decode time")
    server_cached_tokens_p95: NonNegative | None = Field(
        default=None, description="p95 of the prompt tokens the server reused from its cache"
    )

    @model_validator(mode="after")
    def _consistent(self) -> WindowStats:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if self.error_count > self.count:
            raise ValueError("error_count must not exceed count")
        return self

    def kafka_key(self) -> bytes:
        return f"{self.provider}/{self.model}/{self.workload}/{self.window}".encode()


class Alert(_Event):
    """A rule's verdict on one provider/model/workload/region/window: firing, then resolved.

    ``region`` and ``window`` were added in a later release; older alerts without them still decode."""

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: Name
    rule: Name
    severity: Severity
    state: AlertState
    provider: Name
    model: Name
    workload: Name
    region: str | None = None
    window: str | None = Field(default=None, description="window size of the WindowStats judged, e.g. 1m")
    metric: Name
    value: Annotated[float, Field(allow_inf_nan=False)] | None
    baseline: Annotated[float, Field(allow_inf_nan=False)] | None = None
    threshold: Annotated[float, Field(allow_inf_nan=False)]
    window_end: UtcNanos
    message: Annotated[str, Field(max_length=2000)]

    def kafka_key(self) -> bytes:
        return (
            f"{self.rule}/{self.provider}/{self.model}/{self.workload}/{self.region or ''}/{self.window or ''}".encode()
        )

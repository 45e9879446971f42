"""Latency profiles of simulated providers and scripted changes over time (pure, no I/O)."""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Z95 = 1.6448536269514722


class LatencyProfile(BaseModel):
    """How one simulated endpoint behaves.

    TTFT is log-normal with median ``ttft_ms`` and 95th percentile ``ttft_p95_ms`` (equal means constant),
    plus ``prefill_ms_per_token`` for every prompt token not served from the prompt cache. Tokens stream at
    ``tokens_per_s`` with a relative ``jitter`` on every gap. ``output_tokens`` fixes the answer length; by
    default the request's ``max_completion_tokens`` or ``max_tokens`` is honoured.

    A reasoning model: ``reasoning_tokens`` reasoning tokens come first (in ``delta.reasoning_field``, at
    ``reasoning_tokens_per_s``, default ``tokens_per_s``), then the answer; they are extra to the answer's
    length and reported in ``usage.completion_tokens_details.reasoning_tokens``. ``tool_calls`` > 0 makes
    the answer that many tool calls instead of content (each answer token one argument fragment).
    ``prompt_cache`` serves the longest prompt prefix (whole messages) seen before from a cache:
    ``usage.prompt_tokens_details.cached_tokens`` and no prefill time for those tokens. ``usage_details``
    off leaves both details objects out of usage. ``reject_max_tokens`` answers a request that sets
    ``max_tokens`` with HTTP 400, as OpenAI's reasoning models do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: NonNegative = 120.0
    ttft_p95_ms: NonNegative | None = None
    tokens_per_s: Positive = 100.0
    jitter: Annotated[float, Field(ge=0.0, le=5.0)] = 0.1
    output_tokens: Annotated[int, Field(ge=1)] | None = None
    tokens_per_chunk: Annotated[int, Field(ge=1)] = 1
    error_rate: Rate = 0.0
    rate_429: Rate = 0.0
    retry_after_s: NonNegative = 1.0
    cut_rate: Rate = Field(default=0.0, description="share of streams cut mid-way (connection closed)")
    invalid_json_rate: Rate = Field(default=0.0, description="share of streams with a chunk that is not JSON")
    role_chunk: bool = True
    reasoning_tokens: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    reasoning_tokens_per_s: Positive | None = None
    tool_calls: Annotated[int, Field(ge=0, le=64)] = 0
    prompt_cache: bool = False
    prefill_ms_per_token: NonNegative = 0.0
    usage_details: bool = True
    reject_max_tokens: bool = False

    @model_validator(mode="after")
    def _p95_not_below_median(self) -> LatencyProfile:
        if self.ttft_p95_ms is not None and self.ttft_p95_ms < self.ttft_ms:
            raise ValueError("ttft_p95_ms must be >= ttft_ms (the median)")
        return self

    def sample_ttft_s(self, rng: random.Random) -> float:
        if self.ttft_ms == 0:
            return 0.0
        if self.ttft_p95_ms is None or self.ttft_p95_ms == self.ttft_ms:
            return self.ttft_ms / 1000.0
        sigma = math.log(self.ttft_p95_ms / self.ttft_ms) / Z95
        return rng.lognormvariate(math.log(self.ttft_ms / 1000.0), sigma)

    def sample_gap_s(self, rng: random.Random, reasoning: bool = False) -> float:
        rate = self.reasoning_tokens_per_s if reasoning and self.reasoning_tokens_per_s else self.tokens_per_s
        base = self.tokens_per_chunk / rate
        if self.jitter == 0:
            return base
        return max(0.0, rng.gauss(base, base * self.jitter))

    def scaled(self, ttft_scale: float = 1.0, tps_scale: float = 1.0, **overrides: Any) -> LatencyProfile:
        """A copy with TTFT (median and p95) multiplied, the token rate multiplied and fields replaced."""
        update: dict[str, Any] = {"ttft_ms": self.ttft_ms * ttft_scale, "tokens_per_s": self.tokens_per_s * tps_scale}
        if self.ttft_p95_ms is not None:
            update["ttft_p95_ms"] = self.ttft_p95_ms * ttft_scale
        update.update(overrides)
        return LatencyProfile.model_validate({**self.model_dump(), **update})


class ProfileChange(BaseModel):
    """From ``after_s`` seconds after the simulator started, change an endpoint (or every endpoint).

    ``{after_s: 60, ttft_scale: 2}`` is "p95 TTFT doubles after 60 s"; ``set`` replaces profile fields,
    e.g. ``{after_s: 30, set: {error_rate: 0.2}}``. Changes apply cumulatively, in ``after_s`` order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_s: NonNegative
    endpoint: str | None = None
    ttft_scale: Positive = 1.0
    tps_scale: Positive = 1.0
    set: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _set_names_profile_fields(self) -> ProfileChange:
        unknown = set(self.set) - set(LatencyProfile.model_fields)
        if unknown:
            raise ValueError(
                f"set: unknown profile fields {sorted(unknown)}; use {sorted(LatencyProfile.model_fields)}"
            )
        return self


def effective_profile(
    name: str, base: LatencyProfile, changes: list[ProfileChange], elapsed_s: float
) -> LatencyProfile:
    """``base`` with every change for ``name`` due at ``elapsed_s`` applied in order."""
    profile = base
    for change in sorted(changes, key=lambda c: c.after_s):
        if change.after_s <= elapsed_s and change.endpoint in (None, name):
            profile = profile.scaled(change.ttft_scale, change.tps_scale, **change.set)
    return profile


class SimulatorConfig(BaseModel):
    """A simulator's endpoints (name -> profile) and its scripted changes; readable from YAML."""

    model_config = ConfigDict(extra="forbid")

    endpoints: Annotated[dict[str, LatencyProfile], Field(min_length=1)]
    changes: list[ProfileChange] = Field(default_factory=list)
    seed: int | None = None
    close_connection_after: Annotated[int, Field(ge=0)] | None = None
    """Drop every keep-alive connection, without a response, when its request number N+1 arrives: what a
    server that has closed an idle pooled connection looks like to a client that reuses it."""

    @model_validator(mode="after")
    def _changes_name_endpoints(self) -> SimulatorConfig:
        for change in self.changes:
            if change.endpoint is not None and change.endpoint not in self.endpoints:
                raise ValueError(f"change names endpoint {change.endpoint!r}; known: {sorted(self.endpoints)}")
        return self


def default_config() -> SimulatorConfig:
    """Two endpoints that look like a fast and a slower hosted model."""
    return SimulatorConfig(
        endpoints={
            "fast": LatencyProfile(ttft_ms=80, ttft_p95_ms=150, tokens_per_s=400, jitter=0.2),
            "slow": LatencyProfile(ttft_ms=400, ttft_p95_ms=900, tokens_per_s=60, jitter=0.3, error_rate=0.01),
        }
    )

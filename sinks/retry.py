"""Exponential backoff with jitter, and ``Retry-After`` parsing: pure helpers with an injectable RNG."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``attempt`` (0-based): ``initial_s * multiplier**attempt`` capped at ``max_s``,
    scaled by a random factor in ``[1 - jitter, 1]`` so that many clients do not retry in lockstep."""

    initial_s: float = 0.2
    max_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay_s(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 60))
        return base * (1.0 - self.jitter * self.rng.random())


def parse_retry_after(value: str | None, now: datetime | None = None, cap_s: float = 300.0) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), capped; ``None`` if absent
    or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(cap_s, seconds))

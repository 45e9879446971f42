"""The one retry policy of tokenpulse: exponential backoff with jitter, and ``Retry-After`` parsing.

Every component that retries (the InfluxDB writer, the notifiers, the probe's scheduler) takes its delays
from a :class:`Backoff` and reads a server's ``Retry-After`` with :func:`parse_retry_after`. Retry loops
are tenacity's (``Backoff.wait`` is a tenacity wait strategy); the RNG is injectable so tests are exact.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["Backoff", "parse_retry_after"]


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

    def wait(self, retry_state: RetryCallState) -> float:
        """tenacity wait strategy: the failed attempt's ``retry_after_s`` if it has one, else the backoff."""
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after_s", None)
        if isinstance(retry_after, int | float):
            return float(retry_after)
        return self.delay_s(retry_state.attempt_number - 1)


def parse_retry_after(
    value: str | None, now_s: Callable[[], float] = time.time, cap_s: float | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds or an HTTP date, at most ``cap_s``;
    ``None`` if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now_s()
    if seconds != seconds:  # NaN
        return None
    seconds = max(0.0, seconds)
    return seconds if cap_s is None else min(cap_s, seconds)

"""Per-endpoint backoff and circuit breaker: how the probe stops hammering an endpoint that fails.

After a failed request the endpoint is held back for a delay from the one retry policy
(:class:`tokenpulse.retry.Backoff`, exponential with jitter) or for the server's ``Retry-After`` when it gave
one. After ``breaker_after`` failures in a row the circuit opens: the endpoint counts as down
(``tokenpulse_probe_endpoint_up`` 0) and only one trial request at a time is let through, at the backoff's
pace (which grows to its ``max_s``), until one succeeds and closes the circuit again.

The schedules decide what "held back" means: a closed-loop worker waits, an open or periodic schedule skips
the slots that fall due meanwhile (``skipped``) and carries on from the end of the hold, so it never bursts.
Pure logic on an injectable clock: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tokenpulse.retry import Backoff

NS_PER_S = 1_000_000_000

CircuitState = Literal["closed", "open"]

__all__ = ["CircuitState", "EndpointHealth", "HealthPolicy"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Backoff after errors (``backoff``), the cap on a server's ``Retry-After``, and the breaker threshold."""

    backoff: Backoff
    max_retry_after_s: float = 60.0
    breaker_after: int = 5


class EndpointHealth:
    """Whether a request to one endpoint may start now, from the outcomes of the previous ones."""

    def __init__(
        self,
        policy: HealthPolicy,
        clock: Callable[[], int] = time.monotonic_ns,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._wall_clock = wall_clock
        self.state: CircuitState = "closed"
        self.consecutive_failures = 0
        self.blocked_until_ns = 0
        self.trial_in_flight = False
        self.skipped = 0
        """Slots of an open or periodic schedule not sent because the endpoint was held back."""
        self.last_success_s: float | None = None
        """Wall-clock time (Unix seconds) of the last successful request."""
        self.backoffs = 0
        """Holds started after a failure (Retry-After ones included)."""

    @property
    def up(self) -> bool:
        return self.state == "closed"

    def remaining_ns(self) -> int:
        """How long until a request may start (0: now, unless a trial of an open circuit is in flight)."""
        return max(0, self.blocked_until_ns - self._clock())

    def admit(self) -> bool:
        """``True`` if a request may start now; an open circuit admits one trial at a time."""
        if self._clock() < self.blocked_until_ns:
            return False
        if self.state == "open":
            if self.trial_in_flight:
                return False
            self.trial_in_flight = True
        return True

    def skip(self, slots: int = 1) -> None:
        self.skipped += slots

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.state = "closed"
        self.trial_in_flight = False
        self.last_success_s = self._wall_clock()

    def record_failure(self, retry_after_s: float | None = None) -> None:
        """Hold the endpoint back: ``retry_after_s`` (capped) if the server gave one, else the backoff's delay."""
        self.consecutive_failures += 1
        self.trial_in_flight = False
        if self.consecutive_failures >= self.policy.breaker_after:
            self.state = "open"
        if retry_after_s is not None:
            delay_s = min(retry_after_s, self.policy.max_retry_after_s)
        else:
            delay_s = self.policy.backoff.delay_s(self.consecutive_failures - 1)
        self.backoffs += 1
        self.blocked_until_ns = max(self.blocked_until_ns, self._clock() + int(delay_s * NS_PER_S))

    def release_trial(self) -> None:
        """An admitted request that was not sent after all (the schedule ended)."""
        self.trial_in_flight = False

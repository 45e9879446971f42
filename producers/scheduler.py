"""When requests are sent: closed loop (N in flight) or open loop (Poisson arrivals), honouring Retry-After.

Open-loop send times are planned up front from the arrival process and every request carries its planned
time, so the probe can record schedule lag (actual minus planned send time): if the probe or the server
falls behind, the lag shows it instead of silently thinning the load (coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

NS_PER_S = 1_000_000_000
# asyncio (and uvloop) timers fire up to ~1 ms late: selectors wait in whole milliseconds. ``sleep_until``
# sleeps to SPIN_NS before its deadline and covers the rest by yielding to the loop until the clock says so.
SPIN_NS = 1_500_000
# Open-loop requests are started this long before their planned time, so building the request and getting a
# connection from the pool happen before it; the adapter then holds the request until the planned time.
SEND_LEAD_NS = 5_000_000


async def sleep_until(
    deadline_ns: int, clock: Callable[[], int] = time.monotonic_ns, spin_ns: int | None = None
) -> None:
    """Return as soon as possible once ``clock() >= deadline_ns``, without blocking the event loop.

    A plain ``asyncio.sleep`` wakes up to a millisecond late; the last ``spin_ns`` are spent yielding to the
    loop (``sleep(0)``), so other tasks still run while this one waits precisely. ``spin_ns`` defaults to
    ``SPIN_NS``; 0 is a plain sleep.
    """
    spin_ns = SPIN_NS if spin_ns is None else spin_ns
    remaining = deadline_ns - clock()
    if remaining > spin_ns:
        await asyncio.sleep((remaining - spin_ns) / NS_PER_S)
    while clock() < deadline_ns:
        if spin_ns:
            await asyncio.sleep(0)
        else:
            await asyncio.sleep((deadline_ns - clock()) / NS_PER_S)


class RetryAfterGate:
    """Holds new requests to one endpoint back until a server-given ``Retry-After`` has passed."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns, max_wait_s: float = 60.0) -> None:
        self._clock = clock
        self._max_wait_s = max_wait_s
        self.blocked_until_ns = 0

    def block(self, retry_after_s: float) -> None:
        """Hold requests for ``retry_after_s`` (capped at ``max_wait_s``) from now."""
        until = self._clock() + int(min(retry_after_s, self._max_wait_s) * NS_PER_S)
        self.blocked_until_ns = max(self.blocked_until_ns, until)

    def remaining_s(self) -> float:
        return max(0.0, (self.blocked_until_ns - self._clock()) / NS_PER_S)

    async def wait(self) -> None:
        while (remaining := self.remaining_s()) > 0:
            await asyncio.sleep(remaining)


@dataclass(frozen=True, slots=True)
class Slot:
    """The ``index``-th request of a schedule; ``planned_ns`` is set for open-loop schedules only."""

    index: int
    planned_ns: int | None


Execute = Callable[[Slot], Coroutine[Any, Any, None]]


class StopCondition:
    """Stops after ``max_requests`` slots or once ``duration_s`` has passed since ``start()``."""

    def __init__(self, max_requests: int | None, duration_s: float | None, clock: Callable[[], int]) -> None:
        self.max_requests = max_requests
        self.duration_ns = int(duration_s * NS_PER_S) if duration_s is not None else None
        self._clock = clock
        self._start_ns = clock()
        self.issued = 0

    def start(self) -> None:
        self._start_ns = self._clock()

    def halt(self) -> None:
        """End the schedule now: every later ``take`` returns ``None``."""
        self.max_requests = self.issued

    def take(self) -> int | None:
        """The next slot index, or ``None`` when the schedule is over."""
        if self.max_requests is not None and self.issued >= self.max_requests:
            return None
        if self.duration_ns is not None and self._clock() - self._start_ns >= self.duration_ns:
            return None
        self.issued += 1
        return self.issued - 1


async def run_closed_loop(concurrency: int, stop: StopCondition, gate: RetryAfterGate, execute: Execute) -> None:
    """``concurrency`` workers; each sends its next request when its previous one has finished."""

    async def worker() -> None:
        while True:
            await gate.wait()
            index = stop.take()
            if index is None:
                return
            await execute(Slot(index, None))

    stop.start()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


def poisson_offsets_ns(rate_per_s: float, rng: random.Random) -> Callable[[], int]:
    """A generator of exponential inter-arrival gaps in ns for a Poisson process of ``rate_per_s``."""

    def next_gap() -> int:
        return int(rng.expovariate(rate_per_s) * NS_PER_S)

    return next_gap


async def run_open_loop(
    rate_per_s: float,
    stop: StopCondition,
    gate: RetryAfterGate,
    execute: Execute,
    *,
    rng: random.Random | None = None,
    clock: Callable[[], int] = time.monotonic_ns,
    lead_ns: int = SEND_LEAD_NS,
) -> None:
    """Launch requests at Poisson arrival times, without waiting for earlier ones to finish.

    Each ``execute(slot)`` starts ``lead_ns`` before ``slot.planned_ns`` and is expected to hold its request
    until then (``sleep_until``), so the preparation of a request is not part of its schedule lag.
    """
    next_gap = poisson_offsets_ns(rate_per_s, rng or random.Random())
    stop.start()
    planned_ns = clock() + lead_ns
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            planned_ns += next_gap()
            await sleep_until(planned_ns - lead_ns, clock, spin_ns=0)
            await gate.wait()
            index = stop.take()
            if index is None:
                break
            task = asyncio.create_task(execute(Slot(index, planned_ns)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()

"""When requests are sent: closed loop (N in flight), open loop (Poisson arrivals) or periodic bursts.

Open-loop and periodic send times are planned from the schedule and every request carries its planned
time, so the probe can record schedule lag (actual minus planned send time): if the probe or the server
falls behind, the lag shows it instead of silently thinning the load (coordinated omission).

Each endpoint's :class:`~tokenpulse.producers.health.EndpointHealth` holds requests back after errors
(backoff, Retry-After, circuit breaker): a closed-loop worker waits; open and periodic schedules skip the
slots that fall due while held back (counted in ``health.skipped``) and carry on from the end of the hold,
so they never send a burst of overdue requests. ``StopCondition.halt()`` ends a schedule early (the monitor's
reload and shutdown): no new request starts, the ones in flight finish.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from tokenpulse.producers.health import EndpointHealth

NS_PER_S = 1_000_000_000
# asyncio (and uvloop) timers fire up to ~1 ms late: selectors wait in whole milliseconds. ``sleep_until``
# sleeps to SPIN_NS before its deadline and covers the rest by yielding to the loop until the clock says so.
SPIN_NS = 1_500_000
# Open-loop requests are started this long before their planned time, so building the request and getting a
# connection from the pool happen before it; the adapter then holds the request until the planned time.
SEND_LEAD_NS = 5_000_000
# An open loop that has fallen this far behind its plan (a starved CPU, a stalled loop) skips the overdue
# arrivals instead of launching them all at once: the lag up to here is in the events, the rest is counted
# as skipped, and the requests in flight (and the memory they hold) stay bounded for a monitor that runs
# for months.
MAX_BEHIND_NS = 1_000_000_000


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


@dataclass(frozen=True, slots=True)
class Slot:
    """The ``index``-th request of a schedule; ``planned_ns`` is set for open-loop schedules only."""

    index: int
    planned_ns: int | None


Execute = Callable[[Slot], Coroutine[Any, Any, None]]


# A halted schedule notices within this long while it sleeps towards its next slot.
HALT_POLL_S = 0.25


class StopCondition:
    """Stops after ``max_requests`` slots, once ``duration_s`` has passed since ``start()`` (both ``None``:
    never), or when ``halt()`` is called."""

    def __init__(self, max_requests: int | None, duration_s: float | None, clock: Callable[[], int]) -> None:
        self.max_requests = max_requests
        self.duration_ns = int(duration_s * NS_PER_S) if duration_s is not None else None
        self._clock = clock
        self._start_ns = clock()
        self.issued = 0
        self.halted = False

    def start(self) -> None:
        self._start_ns = self._clock()

    def halt(self) -> None:
        """No further slot: schedules stop launching requests (those in flight are left to finish)."""
        self.halted = True

    def over(self) -> bool:
        if self.halted:
            return True
        if self.max_requests is not None and self.issued >= self.max_requests:
            return True
        return self.duration_ns is not None and self._clock() - self._start_ns >= self.duration_ns

    async def sleep_until(self, deadline_ns: int, clock: Callable[[], int]) -> bool:
        """Sleep until ``clock() >= deadline_ns``; ``False`` if the schedule ended meanwhile."""
        while not self.over():
            remaining_s = (deadline_ns - clock()) / NS_PER_S
            if remaining_s <= 0:
                return True
            await asyncio.sleep(min(remaining_s, HALT_POLL_S))
        return False

    def take(self) -> int | None:
        """The next slot index, or ``None`` when the schedule is over."""
        if self.halted:
            return None
        if self.max_requests is not None and self.issued >= self.max_requests:
            return None
        if self.duration_ns is not None and self._clock() - self._start_ns >= self.duration_ns:
            return None
        self.issued += 1
        return self.issued - 1


async def wait_for_admission(health: EndpointHealth, stop: StopCondition, clock: Callable[[], int]) -> bool:
    """Wait until ``health`` admits a request (a closed-loop worker's backoff); ``False`` if the schedule ended."""
    while not health.admit():
        wait_ns = health.remaining_ns() or int(HALT_POLL_S * NS_PER_S)  # an open circuit's trial in flight
        if not await stop.sleep_until(clock() + wait_ns, clock):
            return False
    return True


async def run_closed_loop(
    concurrency: int,
    stop: StopCondition,
    health: EndpointHealth,
    execute: Execute,
    *,
    clock: Callable[[], int] = time.monotonic_ns,
) -> None:
    """``concurrency`` workers; each sends its next request when its previous one has finished and the
    endpoint's backoff lets it."""

    async def worker() -> None:
        while True:
            if not await wait_for_admission(health, stop, clock):
                return
            index = stop.take()
            if index is None:
                health.release_trial()
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


def _admit_or_skip(health: EndpointHealth) -> bool:
    """At a slot that is due: ``True`` if it may be sent; otherwise it is counted as skipped."""
    if health.admit():
        return True
    health.skip()
    return False


async def run_open_loop(
    rate_per_s: float,
    stop: StopCondition,
    health: EndpointHealth,
    execute: Execute,
    *,
    rng: random.Random | None = None,
    clock: Callable[[], int] = time.monotonic_ns,
    lead_ns: int = SEND_LEAD_NS,
    max_behind_ns: int = MAX_BEHIND_NS,
) -> None:
    """Launch requests at Poisson arrival times, without waiting for earlier ones to finish.

    Each ``execute(slot)`` starts ``lead_ns`` before ``slot.planned_ns`` and is expected to hold its request
    until then (``sleep_until``), so the preparation of a request is not part of its schedule lag. While the
    endpoint is held back, the arrivals that fall due are skipped and counted, not sent late; so are those
    more than ``max_behind_ns`` overdue when the loop gets to them.
    """
    next_gap = poisson_offsets_ns(rate_per_s, rng or random.Random())
    stop.start()
    planned_ns = clock() + lead_ns
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            planned_ns += next_gap()
            # Arrivals inside a hold (backoff, Retry-After) are skipped without sleeping through each one:
            # the schedule resumes from the end of the hold with the arrivals that come after it.
            while planned_ns - lead_ns < health.blocked_until_ns:
                health.skip()
                planned_ns += next_gap()
            if not await stop.sleep_until(planned_ns - lead_ns, clock):
                break
            if clock() - planned_ns > max_behind_ns:
                health.skip()
                continue
            if not _admit_or_skip(health):
                continue
            index = stop.take()
            if index is None:
                health.release_trial()
                break
            _launch(tasks, execute(Slot(index, planned_ns)))
        await _finish(tasks)
    finally:
        for task in tasks:
            task.cancel()


async def run_periodic(
    every_ns: int,
    requests: int,
    concurrency: int,
    jitter_ns: int,
    stop: StopCondition,
    health: EndpointHealth,
    execute: Execute,
    *,
    rng: random.Random | None = None,
    clock: Callable[[], int] = time.monotonic_ns,
    lead_ns: int = SEND_LEAD_NS,
) -> None:
    """A burst of ``requests`` (at most ``concurrency`` in flight) at ``origin + k * every + U(0, jitter)``.

    The first ``concurrency`` requests of a burst carry the burst's planned time (their schedule lag is
    measured); the rest start as earlier ones finish, as in a closed loop. Bursts are planned on the origin's
    grid, so a slow burst never shifts the next one; a burst that falls due while the endpoint is held back
    is skipped. A burst still running when the next falls due keeps running beside it.
    """
    rng = rng or random.Random()
    stop.start()
    origin_ns = clock() + lead_ns
    tasks: set[asyncio.Task[None]] = set()
    try:
        for period in itertools.count():
            burst_ns = origin_ns + period * every_ns + (rng.randrange(jitter_ns + 1) if jitter_ns else 0)
            if not await stop.sleep_until(burst_ns - lead_ns, clock):
                break
            _launch(tasks, _burst(burst_ns, requests, concurrency, stop, health, execute))
        await _finish(tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _burst(
    burst_ns: int, requests: int, concurrency: int, stop: StopCondition, health: EndpointHealth, execute: Execute
) -> None:
    remaining = requests
    first_wave = min(concurrency, requests)

    async def worker() -> None:
        nonlocal remaining, first_wave
        while remaining > 0:
            remaining -= 1
            planned_ns = burst_ns if first_wave > 0 else None
            first_wave -= 1
            if not _admit_or_skip(health):
                continue
            index = stop.take()
            if index is None:
                health.release_trial()
                return
            await execute(Slot(index, planned_ns))

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, requests)):
            group.create_task(worker())


def _launch(tasks: set[asyncio.Task[None]], coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _finish(tasks: set[asyncio.Task[None]]) -> None:
    """Wait for the requests still in flight (a failure of one is raised after all have ended)."""
    if tasks:
        await asyncio.gather(*tasks)

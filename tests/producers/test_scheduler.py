"""Closed, open and periodic schedules, backoff and the circuit breaker (schedule checks, generous bounds)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tokenpulse.producers.health import EndpointHealth, HealthPolicy
from tokenpulse.producers.scheduler import (
    Slot,
    StopCondition,
    run_closed_loop,
    run_open_loop,
    run_periodic,
)
from tokenpulse.retry import Backoff
from tokenpulse.testing import FakeClock

MS = 1_000_000
pytestmark = pytest.mark.timeout(60)


def health(clock: FakeClock | None = None, *, initial_s: float = 0.05, max_s: float = 0.2, breaker_after: int = 3):
    policy = HealthPolicy(
        Backoff(initial_s=initial_s, max_s=max_s, jitter=0.0, rng=random.Random(0)),
        max_retry_after_s=5.0,
        breaker_after=breaker_after,
    )
    if clock is None:
        return EndpointHealth(policy)
    return EndpointHealth(policy, clock.monotonic_ns, lambda: clock.time_ns() / 1e9)


def test_closed_loop_keeps_at_most_n_in_flight_and_runs_every_slot() -> None:
    in_flight, peak, seen = 0, 0, []

    async def execute(slot: Slot) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        seen.append(slot.index)
        in_flight -= 1

    clock = FakeClock()
    stop = StopCondition(25, None, clock.monotonic_ns)
    asyncio.run(run_closed_loop(3, stop, health(clock), execute, clock=clock.monotonic_ns))
    assert sorted(seen) == list(range(25))
    assert peak == 3


def test_open_loop_plans_increasing_send_times_and_does_not_wait_for_responses() -> None:
    planned: list[int] = []
    release = asyncio.Event()

    async def execute(slot: Slot) -> None:
        assert slot.planned_ns is not None
        planned.append(slot.planned_ns)
        if len(planned) == 20:
            release.set()
        await release.wait()  # no request finishes before all 20 were sent: open loop

    stop = StopCondition(20, None, FakeClock().monotonic_ns)
    asyncio.run(run_open_loop(2000.0, stop, health(), execute, rng=random.Random(1)))
    assert len(planned) == 20 and planned == sorted(planned) and len(set(planned)) == 20


def test_stop_condition_by_duration() -> None:
    clock = FakeClock()
    stop = StopCondition(None, 2.0, clock.monotonic_ns)
    assert stop.take() == 0
    clock.advance(s=1.5)
    assert stop.take() == 1
    clock.advance(s=0.5)
    assert stop.take() is None


def test_backoff_grows_retry_after_is_capped_and_the_breaker_opens_then_closes() -> None:
    clock = FakeClock()
    h = health(clock)
    assert h.admit() and h.up
    h.record_failure()
    assert h.remaining_ns() == 50 * MS and not h.admit()
    clock.advance(ms=50)
    h.record_failure()
    assert h.remaining_ns() == 100 * MS and h.up  # doubled; two failures are below the breaker's three
    clock.advance(ms=100)
    h.record_failure(retry_after_s=100.0)  # the server's Retry-After wins, capped at max_retry_after_s
    assert h.remaining_ns() == 5_000 * MS and not h.up
    clock.advance(s=5)
    assert h.admit()  # the open circuit's one trial request ...
    assert not h.admit()  # ... and no second one while it is in flight
    h.record_failure()
    assert h.remaining_ns() == 200 * MS  # capped at max_s
    clock.advance(ms=200)
    assert h.admit()
    h.record_success()
    assert h.up and h.consecutive_failures == 0 and h.last_success_s == clock.time_ns() / 1e9
    assert h.admit() and h.admit()  # closed again: no trial limit


def test_closed_loop_against_a_failing_endpoint_waits_instead_of_flooding() -> None:
    attempts = 0

    async def execute(_slot: Slot) -> None:
        nonlocal attempts
        attempts += 1
        h.record_failure()  # as a refused connection would, at once

    h = health(initial_s=0.05, max_s=0.2)
    stop = StopCondition(None, 1.0, time.monotonic_ns)
    asyncio.run(run_closed_loop(2, stop, h, execute))
    # Without backoff this loop makes hundreds of thousands of attempts a second; with it, about one per
    # 50-200 ms, and one at a time once the breaker is open.
    assert 3 <= attempts <= 30
    assert not h.up


def test_open_loop_skips_the_slots_of_a_retry_after_hold_and_does_not_burst_after_it() -> None:
    sent: list[int] = []
    hold_until = 0

    async def execute(slot: Slot) -> None:
        nonlocal hold_until
        assert slot.planned_ns is not None
        sent.append(slot.planned_ns)
        if len(sent) == 10:
            h.record_failure(retry_after_s=0.3)
            hold_until = h.blocked_until_ns
        else:
            h.record_success()

    h = health()
    stop = StopCondition(None, 1.2, time.monotonic_ns)
    asyncio.run(run_open_loop(100.0, stop, h, execute, rng=random.Random(3)))
    assert hold_until
    assert not [p for p in sent if sent[9] < p < hold_until - 5 * MS]  # nothing planned inside the hold
    assert h.skipped >= 10  # about 30 arrivals fell inside the 300 ms hold
    after = [p for p in sent if hold_until - 5 * MS <= p < hold_until + 100 * MS]
    assert len(after) <= 30  # the rate's 10 in 100 ms, not the 30 overdue at once


def test_periodic_bursts_fall_on_the_grid_within_their_jitter() -> None:
    planned: list[int] = []

    async def execute(slot: Slot) -> None:
        if slot.planned_ns is not None:
            planned.append(slot.planned_ns)
        await asyncio.sleep(0.01)

    stop = StopCondition(None, 1.05, time.monotonic_ns)
    every_ns, jitter_ns = 200 * MS, 50 * MS
    asyncio.run(run_periodic(every_ns, 3, 3, jitter_ns, stop, health(), execute, rng=random.Random(5)))
    bursts = sorted(set(planned))
    assert 5 <= len(bursts) <= 6 and len(planned) == 3 * len(bursts)  # all 3 of a burst share its time
    offsets = [burst - k * every_ns for k, burst in enumerate(bursts)]
    assert max(offsets) - min(offsets) <= jitter_ns


def test_a_burst_beyond_its_concurrency_runs_the_rest_as_earlier_ones_finish() -> None:
    in_flight, peak, slots = 0, 0, []

    async def execute(slot: Slot) -> None:
        nonlocal in_flight, peak
        slots.append(slot)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1

    stop = StopCondition(5, None, time.monotonic_ns)
    asyncio.run(run_periodic(10_000 * MS, 5, 2, 0, stop, health(), execute))
    assert len(slots) == 5 and peak == 2
    assert sum(s.planned_ns is not None for s in slots) == 2  # only the first wave is on the schedule


def test_halt_ends_a_long_period_at_once() -> None:
    async def main() -> float:
        stop = StopCondition(None, None, time.monotonic_ns)

        async def execute(_slot: Slot) -> None:
            await asyncio.sleep(0.05)

        started = time.monotonic()
        task = asyncio.create_task(run_periodic(3_600_000 * MS, 1, 1, 0, stop, health(), execute))
        await asyncio.sleep(0.1)
        stop.halt()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started

    assert asyncio.run(main()) < 5


def test_an_open_loop_far_behind_its_plan_skips_the_overdue_arrivals_instead_of_bursting() -> None:
    sent: list[int] = []

    async def execute(slot: Slot) -> None:
        assert slot.planned_ns is not None
        sent.append(slot.planned_ns)
        if len(sent) == 5:
            time.sleep(0.5)  # the loop stalls for 500 ms (a starved CPU): 50 arrivals fall overdue

    h = health()
    stop = StopCondition(None, 1.0, time.monotonic_ns)
    asyncio.run(run_open_loop(100.0, stop, h, execute, rng=random.Random(2), max_behind_ns=100 * MS))
    assert h.skipped >= 30  # the arrivals more than 100 ms overdue were skipped ...
    stall_end = sent[4] + 500 * MS
    assert len([p for p in sent if sent[4] < p < stall_end - 100 * MS]) == 0  # ... not sent late

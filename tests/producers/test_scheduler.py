"""Closed and open loop schedules and the Retry-After gate (no timing assertions)."""

from __future__ import annotations

import asyncio
import random

from tokenpulse.producers.scheduler import RetryAfterGate, Slot, StopCondition, run_closed_loop, run_open_loop
from tokenpulse.testing import FakeClock


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
    asyncio.run(run_closed_loop(3, stop, RetryAfterGate(clock.monotonic_ns), execute))
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
    gate = RetryAfterGate()
    asyncio.run(run_open_loop(2000.0, stop, gate, execute, rng=random.Random(1)))
    assert len(planned) == 20 and planned == sorted(planned) and len(set(planned)) == 20


def test_stop_condition_by_duration() -> None:
    clock = FakeClock()
    stop = StopCondition(None, 2.0, clock.monotonic_ns)
    assert stop.take() == 0
    clock.advance(s=1.5)
    assert stop.take() == 1
    clock.advance(s=0.5)
    assert stop.take() is None


def test_retry_after_gate_blocks_and_caps() -> None:
    clock = FakeClock()
    gate = RetryAfterGate(clock.monotonic_ns, max_wait_s=5.0)
    assert gate.remaining_s() == 0
    gate.block(2.0)
    assert gate.remaining_s() == 2.0
    gate.block(1.0)  # a shorter Retry-After never shortens an earlier one
    assert gate.remaining_s() == 2.0
    gate.block(100.0)
    assert gate.remaining_s() == 5.0
    clock.advance(s=5)
    assert gate.remaining_s() == 0
    asyncio.run(gate.wait())

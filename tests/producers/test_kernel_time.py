"""Kernel receive timestamps put on the monotonic clock."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tokenpulse.producers import kernel_time
from tokenpulse.producers.kernel_time import SO_TIMESTAMPNS, kernel_arrival_ns, wall_to_monotonic_ns


def clocks(monkeypatch: pytest.MonkeyPatch, monotonic: list[int], wall: list[int]) -> None:
    mono_values: Iterator[int] = iter(monotonic)
    wall_values: Iterator[int] = iter(wall)
    monkeypatch.setattr(kernel_time, "monotonic_ns", lambda: next(mono_values))
    monkeypatch.setattr(kernel_time, "time_ns", lambda: next(wall_values))


def test_a_preempted_reading_of_the_wall_clock_is_taken_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # First reading: 300 us between the monotonic readings (preempted); second: 100 ns.
    clocks(monkeypatch, monotonic=[1_000_000, 1_300_000, 2_000_000, 2_000_100], wall=[5_001_000_000, 5_002_000_050])
    offset, now = wall_to_monotonic_ns()
    assert offset == 2_000_050 - 5_002_000_050 and now == 2_000_100


def test_the_tightest_of_four_wide_readings_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    gaps = [400_000, 90_000, 300_000, 200_000]
    monotonic = [v for i, gap in enumerate(gaps) for v in (i * 1_000_000, i * 1_000_000 + gap)]
    clocks(monkeypatch, monotonic=monotonic, wall=[10_000_000_000] * 4)
    offset, now = wall_to_monotonic_ns()
    assert (offset, now) == ((1_000_000 + 1_090_000) // 2 - 10_000_000_000, 1_090_000)


def test_a_kernel_stamp_is_moved_onto_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = struct.pack("@ll", 5, 250)  # wall 5.000000250 s
    clocks(monkeypatch, monotonic=[7_000_000_000, 7_000_000_000], wall=[5_000_001_000])
    ancillary = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)]
    assert kernel_arrival_ns(ancillary) == 7_000_000_000 - 750  # 750 ns before the reading
    assert kernel_arrival_ns([]) is None


def test_a_stamp_from_the_future_means_a_stepped_clock_and_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = struct.pack("@ll", 5, 0)
    clocks(monkeypatch, monotonic=[7_000_000_000, 7_000_000_000], wall=[4_999_000_000])  # stepped back 1 ms
    assert kernel_arrival_ns([(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)]) is None


def test_real_clocks_give_an_offset_that_matches_the_wall_clock() -> None:
    offset, now = wall_to_monotonic_ns()
    assert abs(time.time_ns() + offset - time.monotonic_ns()) < 5_000_000  # same clocks, read moments apart
    assert now <= time.monotonic_ns()

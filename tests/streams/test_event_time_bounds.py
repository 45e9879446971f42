"""Event time bounded by wall time: future and expired events are dead letters that never move the watermark;
the idle sweep counts quiet time only while a partition is live (connected and caught up)."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from tokenpulse.schemas import WindowStats, decode, encode
from tokenpulse.streams.app import partition_caught_up
from tokenpulse.streams.core import EventTimeBounds, WindowCore
from tokenpulse.streams.engine import WindowConfig
from tokenpulse.testing.streams import DEFAULT_START_NS, TimingFactory, TimingKey, exact_windows

S = 1_000_000_000
YEAR_NS = 365 * 86_400 * S
KEY = TimingKey("sim", "m")


class Clocks:
    def __init__(self, wall_ns: int) -> None:
        self.wall = wall_ns
        self.mono = 1000.0

    def wall_ns(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def core_at(clocks: Clocks, idle_close_s: float = 10.0) -> WindowCore:
    return WindowCore(
        WindowConfig.parse(["1m"], "5s"),
        idle_close_s,
        clocks.monotonic,
        bounds=EventTimeBounds(),
        wall_ns=clocks.wall_ns,
    )


def test_a_year_ahead_and_decades_old_events_are_dead_letters_and_the_windows_stay_exact() -> None:
    clocks = Clocks(DEFAULT_START_NS + 10 * 60 * S)
    core = core_at(clocks)
    factory = TimingFactory(seed=3)
    events = list(factory.stream([KEY], 3000, interval_ns=S // 5))  # 10 minutes of events, 5 a second
    ahead = factory.event(KEY, DEFAULT_START_NS + YEAR_NS)
    old = factory.event(KEY, DEFAULT_START_NS - 30 * YEAR_NS)
    offset = 0
    for i, event in enumerate(events):
        if i in (100, 2000):  # one wrong clock early, one late in the stream
            for bad in (ahead, old):
                core.apply(0, offset, bad.kafka_key(), encode(bad))
                offset += 1
        core.apply(0, offset, event.kafka_key(), encode(event))
        offset += 1
    output = core.drain()
    reasons = [letter.error.split(":")[0] for letter in output.dead_letters]
    assert reasons == ["future_event_time", "expired_event_time"] * 2
    assert "check the probe host's clock" in output.dead_letters[0].error
    state = core.partitions[0]
    assert state.watermark.max_event_ns == events[-1].started_at  # the year-ahead event did not move it
    assert state.counters.late == 0 and core.future_events == 2 and core.expired_events == 2
    emitted: dict[int, int] = {}
    for _, value in output.windows:
        stats = decode(WindowStats, value)
        emitted[stats.window_end] = stats.count  # the latest emission of a window wins
    closed = events[-1].started_at - 5 * S
    expected = {key[-1]: w.count for key, w in exact_windows(events, 60 * S).items() if key[-1] <= closed}
    assert len(expected) == 9 and {end: emitted[end] for end in expected} == expected


def test_the_tolerance_is_configurable_and_an_event_inside_it_is_windowed() -> None:
    clocks = Clocks(DEFAULT_START_NS)
    core = WindowCore(
        WindowConfig.parse(["1m"], "5s"),
        10.0,
        clocks.monotonic,
        bounds=EventTimeBounds(future_tolerance_ns=60 * S),
        wall_ns=clocks.wall_ns,
    )
    inside = TimingFactory().event(KEY, DEFAULT_START_NS + 59 * S)
    outside = TimingFactory().event(KEY, DEFAULT_START_NS + 61 * S)
    core.apply(0, 0, None, encode(inside))
    core.apply(0, 1, None, encode(outside))
    assert [d.error.split(":")[0] for d in core.drain().dead_letters] == ["future_event_time"]


def test_idle_close_counts_quiet_time_only_while_the_partition_is_live() -> None:
    clocks = Clocks(DEFAULT_START_NS + 60 * S)
    core = core_at(clocks, idle_close_s=10.0)
    event = TimingFactory().event(KEY, DEFAULT_START_NS + 30 * S)
    core.apply(0, 0, None, encode(event))
    core.drain()
    live = {"now": False}
    # A 60 s broker outage: not live, so no quiet time accrues and nothing advances.
    for _ in range(60):
        clocks.mono += 1.0
        core.drain(lambda _p: live["now"])
    assert core.partitions[0].watermark.max_event_ns == event.started_at
    live["now"] = True
    for _ in range(9):
        clocks.mono += 1.0
        core.drain(lambda _p: live["now"])
    assert core.partitions[0].watermark.max_event_ns == event.started_at  # 9 s live: not idle yet
    for _ in range(40):
        clocks.mono += 1.0
        output = core.drain(lambda _p: live["now"])
        if output.windows:
            break
    assert core.partitions[0].watermark.max_event_ns > event.started_at  # live and quiet: event time moves


class FakeAioConsumer:
    def __init__(self, highwater: int | None, polled_ms: float | None) -> None:
        self._highwater, self._polled_ms = highwater, polled_ms

    def highwater(self, tp: object) -> int | None:
        return self._highwater

    def last_poll_timestamp(self, tp: object) -> float | None:
        return self._polled_ms


def faust_consumer(aio: object) -> object:
    thread = SimpleNamespace(_ensure_consumer=lambda: aio)
    return SimpleNamespace(_thread=thread)


def test_a_partition_is_live_only_when_fetched_recently_and_caught_up() -> None:
    tp = TP("t", 0)
    now_ms = 1_000_000.0
    assert partition_caught_up(faust_consumer(FakeAioConsumer(10, now_ms - 100)), tp, 9, now_ms)
    assert not partition_caught_up(faust_consumer(FakeAioConsumer(10, now_ms - 100)), tp, 5, now_ms)  # behind
    assert not partition_caught_up(faust_consumer(FakeAioConsumer(10, now_ms - 60_000)), tp, 9, now_ms)  # no fetch
    assert not partition_caught_up(faust_consumer(FakeAioConsumer(None, None)), tp, 9, now_ms)  # just assigned
    assert not partition_caught_up(SimpleNamespace(), tp, 9, now_ms)  # consumer not started

"""The worker shell's synchronous half (no broker): decoding, dead letters and the idle sweep."""

from types import SimpleNamespace

from schemas import encode
from streams.app import WindowProcessor, WorkerConfig
from streams.engine import PartitionWindows
from streams.testing import DEFAULT_START_NS, TimingFactory, TimingKey
from tokenpulse.testing import FakeClock

S = 1_000_000_000


def processor_with(clock):
    config = WorkerConfig(windows=("1m",), grace="5s", idle_close_s=10.0)
    processor = WindowProcessor(
        config, table=None, stats_topic=None, dlq_topic=None, source_topic="t.request-timings",
        monotonic=lambda: clock.monotonic_ns() / S,
    )  # fmt: skip
    processor.partitions[0] = PartitionWindows(0, config.window_config())
    return processor


def message(offset, value, key=b"sim/m"):
    return SimpleNamespace(message=SimpleNamespace(partition=0, offset=offset, key=key, value=value))


def test_bad_bytes_become_dead_letters_and_good_ones_are_windowed():
    processor = processor_with(FakeClock())
    event = TimingFactory(seed=1).event(TimingKey("sim", "m"), DEFAULT_START_NS + S)
    processor.on_message(message(0, encode(event)))
    processor.on_message(message(1, b"{oops"))
    processor.on_message(message(2, None))
    assert processor.pending == 3
    assert [(d.value, d.error.split(":")[0]) for d in processor._dead] == [
        (b"{oops", "not JSON"),
        (None, "empty value (tombstone) where a RequestTiming was expected"),
    ]
    assert processor.partitions[0].counters.accepted == 1


def test_idle_partition_event_time_follows_wall_time_and_closes_the_last_window():
    clock = FakeClock()
    processor = processor_with(clock)
    event = TimingFactory(seed=2).event(TimingKey("sim", "m"), DEFAULT_START_NS + 30 * S)
    processor.on_message(message(0, encode(event)))
    state = processor.partitions[0]
    clock.advance(s=9)
    processor.sweep_idle()
    assert state.take_emitted() == []  # not idle long enough
    clock.advance(s=27)  # 36 s idle: event time 30 s + 36 s = 66 s > window end 60 s + grace 5 s
    processor.sweep_idle()
    emitted = state.take_emitted()
    assert [(s.window_end - DEFAULT_START_NS, s.count) for s in emitted] == [(60 * S, 1)]
    assert state.open_panes == 0


def test_assigned_partitions_are_restored_eagerly_and_quiet_ones_still_close():
    clock = FakeClock()
    config = WorkerConfig(windows=("1m",), grace="5s", idle_close_s=10.0)
    before = PartitionWindows(2, config.window_config())
    event = TimingFactory(seed=3).event(TimingKey("sim", "m"), DEFAULT_START_NS + 30 * S)
    before.handle(7, event)
    table = SimpleNamespace(data=dict(before.changelog_records()))
    processor = WindowProcessor(
        config, table=table, stats_topic=None, dlq_topic=None, source_topic="t.request-timings",
        monotonic=lambda: clock.monotonic_ns() / S,
    )  # fmt: skip
    processor.on_assigned([2, 3])
    restored = processor.partitions[2]
    assert (restored.open_panes, restored.last_offset) == (1, 7)
    assert processor.partitions[3].open_panes == 0
    restored.handle(7, event)  # the uncommitted event replayed after the crash: skipped, not counted twice
    assert restored.counters.replayed == 1
    clock.advance(s=40)  # no further event on partition 2: the idle sweep closes its restored window
    processor.sweep_idle()
    assert [(s.window_end - DEFAULT_START_NS, s.count) for s in restored.take_emitted()] == [(60 * S, 1)]

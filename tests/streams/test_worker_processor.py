"""The worker shell and its window core without a broker: decoding, dead letters, the idle sweep, the order of
a flush, and the offset bookkeeping (redeliveries, skipped offsets)."""

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson

from tokenpulse.schemas import encode
from tokenpulse.streams.app import WindowProcessor, WorkerConfig
from tokenpulse.streams.engine import PartitionWindows
from tokenpulse.testing import FakeClock
from tokenpulse.testing.streams import DEFAULT_START_NS, HISTORICAL_MAX_AGE, TimingFactory, TimingKey

S = 1_000_000_000


def processor_with(clock, table=None):
    config = WorkerConfig(windows=("1m",), grace="5s", idle_close_s=10.0, max_event_age=HISTORICAL_MAX_AGE)
    return WindowProcessor(
        config,
        table=table or SimpleNamespace(data={}),
        stats_topic=None,
        dlq_topic=None,
        source_topic="t.request-timings",
        monotonic=lambda: clock.monotonic_ns() / S,
    )


def core_of(processor):
    return processor.core


def message(offset, value, key=b"sim/m"):
    return SimpleNamespace(message=SimpleNamespace(partition=0, offset=offset, key=key, value=value))


def test_bad_bytes_become_dead_letters_and_good_ones_are_windowed():
    processor = processor_with(FakeClock())
    event = TimingFactory(seed=1).event(TimingKey("sim", "m"), DEFAULT_START_NS + S)
    processor.on_message(message(0, encode(event)))
    processor.on_message(message(1, b"{oops"))
    processor.on_message(message(2, None))
    assert processor.pending == 3
    assert [(d.value, d.error.split(":")[0]) for d in core_of(processor)._dead] == [
        (b"{oops", "not JSON"),
        (None, "empty value (tombstone) where a RequestTiming was expected"),
    ]
    assert core_of(processor).partitions[0].counters.accepted == 1


def test_idle_partition_event_time_follows_wall_time_and_closes_the_last_window():
    clock = FakeClock()
    processor = processor_with(clock)
    event = TimingFactory(seed=2).event(TimingKey("sim", "m"), DEFAULT_START_NS + 30 * S)
    processor.on_message(message(0, encode(event)))
    core = core_of(processor)
    state = core.partitions[0]
    clock.advance(s=9)
    core.sweep_idle()
    assert state.take_emitted() == []  # not idle long enough
    clock.advance(s=27)  # 36 s idle: event time 30 s + 36 s = 66 s > window end 60 s + grace 5 s
    core.sweep_idle()
    emitted = state.take_emitted()
    assert [(s.window_end - DEFAULT_START_NS, s.count) for s in emitted] == [(60 * S, 1)]
    assert state.open_panes == 0


def test_assigned_partitions_are_restored_eagerly_and_quiet_ones_still_close():
    clock = FakeClock()
    config = WorkerConfig(windows=("1m",), grace="5s", max_event_age=HISTORICAL_MAX_AGE)
    before = PartitionWindows(2, config.window_config())
    event = TimingFactory(seed=3).event(TimingKey("sim", "m"), DEFAULT_START_NS + 30 * S)
    before.handle(7, event)
    processor = processor_with(clock, table=SimpleNamespace(data=dict(before.changelog_records())))
    processor.on_assigned([2, 3])
    core = core_of(processor)
    restored = core.partitions[2]
    assert (restored.open_panes, restored.last_offset) == (1, 7)
    assert core.partitions[3].open_panes == 0
    replayed = SimpleNamespace(message=SimpleNamespace(partition=2, offset=7, key=b"sim/m", value=encode(event)))
    processor.on_message(replayed)  # the uncommitted event replayed after the crash: skipped, not counted twice
    assert (processor.counters.redelivered, restored.counters.accepted) == (1, 0)
    clock.advance(s=40)  # no further event on partition 2: the idle sweep closes its restored window
    core.sweep_idle()
    assert [(s.window_end - DEFAULT_START_NS, s.count) for s in restored.take_emitted()] == [(60 * S, 1)]


class JournalTopic:
    """A topic (or the changelog) that writes each send to a shared journal; its futures resolve at once."""

    def __init__(self, journal, name):
        self.journal, self.name = journal, name

    async def send(self, key=None, value=None, headers=None):
        return self._sent(key)

    def _sent(self, key):
        self.journal.append(("send", self.name))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def journaled_processor(journal, windows=("1m",)):
    """A processor whose topics, changelog and producer flushes write to ``journal``."""
    changelog = JournalTopic(journal, "changelog")

    async def flush_producer():
        journal.append(("flush", None))

    table = SimpleNamespace(
        data={},
        send_changelog=lambda partition, key, value: changelog._sent(key),
        app=SimpleNamespace(producer=SimpleNamespace(flush=flush_producer)),
    )
    config = WorkerConfig(windows=windows, grace="5s", max_event_age=HISTORICAL_MAX_AGE)
    return WindowProcessor(
        config,
        table=table,
        stats_topic=JournalTopic(journal, "stats"),
        dlq_topic=JournalTopic(journal, "dlq"),
        source_topic="t.request-timings",
    )


def acking(journal, offset, value):
    event = message(offset, value)
    event.ack = lambda: journal.append(("ack", offset))
    return event


def test_flush_makes_windows_and_dead_letters_durable_before_the_state_that_says_they_were_sent():
    # Were both sent together, a crash could leave the changelog (watermark advanced, panes dropped)
    # durable and the window's closing emission lost; the replay would then never emit it again.
    journal: list[tuple[str, Any]] = []
    processor = journaled_processor(journal)
    factory = TimingFactory(seed=4)
    for offset, at_s in enumerate([30, 70]):  # the second closes the window [0, 60) (70 > 60 + grace)
        value = encode(factory.event(TimingKey("sim", "m"), DEFAULT_START_NS + at_s * S))
        processor.on_message(acking(journal, offset, value))
    processor.on_message(acking(journal, 2, b"{"))

    asyncio.run(processor.flush())

    names = [name if kind == "send" else kind for kind, name in journal]
    first_state = names.index("changelog")
    assert set(names[:first_state]) == {"dlq", "stats", "flush"} and names[first_state - 1] == "flush"
    assert names.count("stats") == 1  # complete and closed (70 s is past the end plus grace) at once
    last_flush = len(names) - 1 - names[::-1].index("flush")
    assert set(names[first_state:last_flush]) == {"changelog"}
    assert names[last_flush + 1 :] == ["ack", "ack", "ack"]


class SeekingConsumer:
    """The two faust consumer calls the processor makes when an offset went missing."""

    def __init__(self, log_start=0):
        self.log_start = log_start
        self.seeks = []

    async def earliest_offsets(self, *tps):
        return {tp: self.log_start for tp in tps}

    async def seek_wait(self, offsets):
        self.seeks.extend((tp.partition, offset) for tp, offset in offsets.items())


def timing_values(count, seed=5):
    factory = TimingFactory(seed=seed)
    return [encode(factory.event(TimingKey("sim", "m"), DEFAULT_START_NS + (i + 1) * S)) for i in range(count)]


def test_a_message_the_consumer_skipped_is_sought_back_and_nothing_after_it_is_applied_or_acked_first():
    journal: list[tuple[str, Any]] = []
    processor = journaled_processor(journal)
    consumer = SeekingConsumer()
    values = timing_values(6)
    for offset in (0, 1, 3, 4):  # faust dropped offset 2 (seen around rebalances)
        processor.on_message(acking(journal, offset, values[offset]))
    state = core_of(processor).partitions[0]
    assert state.counters.accepted == 2 and state.last_offset == 1
    asyncio.run(processor.take_seeks(consumer))
    asyncio.run(processor.take_seeks(consumer))  # once per gap
    assert consumer.seeks == [(0, 2)]
    asyncio.run(processor.flush())
    assert [o for kind, o in journal if kind == "ack"] == [0, 1]  # 3 and 4 wait: acking them lets faust commit past 2
    for offset in (2, 3, 4, 5):  # redelivered from the seek
        processor.on_message(acking(journal, offset, values[offset]))
    asyncio.run(processor.flush())
    acks = [o for kind, o in journal if kind == "ack"]
    assert acks[:2] == [0, 1] and sorted(acks[2:]) == [2, 3, 3, 4, 4, 5]  # held copies acked once applied
    assert (state.counters.accepted, state.last_offset, processor.counters.offset_gaps) == (6, 5, 1)


def test_redelivered_offsets_are_skipped_and_a_dead_letter_moves_the_position_on():
    journal: list[tuple[str, Any]] = []
    processor = journaled_processor(journal)
    values = timing_values(4, seed=6)
    values[2] = b"not json"
    for offset in (0, 1, 2, 1, 2, 3):  # 1 and 2 again: a replay after a restart, or a double fetch
        processor.on_message(acking(journal, offset, values[offset]))
    state = core_of(processor).partitions[0]
    assert (state.counters.accepted, processor.counters.redelivered, len(core_of(processor)._dead)) == (3, 2, 1)
    assert state.last_offset == 3


def test_offsets_deleted_by_retention_are_not_waited_for():
    journal: list[tuple[str, Any]] = []
    processor = journaled_processor(journal)
    values = timing_values(40, seed=7)
    processor.on_message(acking(journal, 0, values[0]))
    processor.on_message(acking(journal, 30, values[30]))  # 1..29 are gone: the log now starts at 30
    processor.on_message(acking(journal, 31, values[31]))
    consumer = SeekingConsumer(log_start=30)
    asyncio.run(processor.take_seeks(consumer))
    assert consumer.seeks == [(0, 30)]  # where the log starts, not the deleted offset 1
    state = core_of(processor).partitions[0]
    assert state.last_offset == 0
    for offset in (30, 31):  # redelivered from the seek: accepted, the deleted ones are not waited for
        processor.on_message(acking(journal, offset, values[offset]))
    assert (state.last_offset, state.counters.accepted) == (31, 3)


def test_offsets_without_a_record_are_accepted_once_the_broker_reads_past_them_again():
    # Transaction markers and compaction leave offsets with no record; the log start is not past them.
    journal: list[tuple[str, Any]] = []
    processor = journaled_processor(journal)
    values = timing_values(10, seed=8)
    processor.on_message(acking(journal, 0, values[0]))
    processor.on_message(acking(journal, 2, values[2]))  # offset 1 is a transaction marker
    consumer = SeekingConsumer(log_start=0)
    asyncio.run(processor.take_seeks(consumer))
    assert consumer.seeks == [(0, 1)]
    state = core_of(processor).partitions[0]
    assert state.last_offset == 0  # held back until the broker has been asked again
    processor.on_message(acking(journal, 2, values[2]))  # read again from 1: the first record is 2
    processor.on_message(acking(journal, 3, values[3]))
    assert (state.last_offset, state.counters.accepted, processor.has_gaps) == (3, 3, False)


def test_a_revoked_partitions_state_is_forgotten():
    processor = journaled_processor([])
    for partition in (0, 1):
        processor.table.data[orjson.dumps(["meta", partition])] = b'{"max_event_ns": 1, "last_offset": 0}'
    processor.drop([1])
    assert [orjson.loads(k)[1] for k in processor.table.data] == [0]

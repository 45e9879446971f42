"""The worker's CPU work, without faust: decode, window, sweep idle partitions, and hand back what to send.

``WindowCore`` owns the ``PartitionWindows`` of every partition this worker holds. The faust shell
(``streams.app``) keeps the offsets and the acks: it passes each partition's messages in offset order to
``apply`` and, on every flush, takes the dead letters, the encoded ``WindowStats`` and the changelog
records from ``drain``. The core is plain synchronous Python, tested without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from schemas import SchemaError, encode
from streams.decoding import decode_timing
from streams.engine import ChangelogRecord, PartitionWindows, WindowConfig, meta_record_key, record_partition

NANOS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    error: str


@dataclass
class CoreCounters:
    applied: int = 0
    dead_letters: int = 0
    emitted: int = 0
    duplicates: int = 0
    late: int = 0
    replayed: int = 0


@dataclass
class CoreOutput:
    """What one flush must make durable, in this order: dead letters and windows, then the state."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[tuple[bytes, bytes]] = field(default_factory=list)  # (Kafka key, encoded WindowStats)
    records: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)  # (partition, key, value)
    counters: CoreCounters = field(default_factory=CoreCounters)


@dataclass(frozen=True)
class RestoreSummary:
    partition: int
    records: int
    open_panes: int
    max_event_ns: int
    last_offset: int

    def describe(self) -> str:
        return (
            f"partition {self.partition}: restored {self.open_panes} open panes from {self.records} changelog "
            f"records, event time {self.max_event_ns}, last offset {self.last_offset}"
        )


def summarize_restore(partition: int, records: Iterable[ChangelogRecord]) -> RestoreSummary:
    """What ``WindowCore.restore`` will rebuild from ``records``, read from the record keys and the meta record
    alone (cheap: no sketch is decoded)."""
    count = open_panes = 0
    max_event_ns = last_offset = -1
    meta_key = meta_record_key(partition)
    for key, value in records:
        if record_partition(key) != partition:
            continue
        count += 1
        if key == meta_key:
            if value is not None:
                meta = orjson.loads(value)
                max_event_ns, last_offset = meta["max_event_ns"], meta["last_offset"]
        elif value is not None:
            open_panes += 1
    return RestoreSummary(partition, count, open_panes, max_event_ns, last_offset)


class WindowCore:
    """Window state of the partitions this worker holds; synchronous, fed in offset order per partition."""

    def __init__(
        self, config: WindowConfig, idle_close_s: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.idle_close_s = idle_close_s
        self.monotonic = monotonic
        self.partitions: dict[int, PartitionWindows] = {}
        self._last_event_mono: dict[int, float] = {}
        self._sweep_base: dict[int, tuple[float, int]] = {}  # last event time -> event time at that moment
        self._changed: set[int] = set()
        self._dead: list[DeadLetter] = []
        self._emitted = 0
        self._dead_count = 0
        self._applied = 0

    def restore(self, partition: int, records: Sequence[ChangelogRecord]) -> None:
        """Rebuild ``partition`` from its changelog records (any records of other partitions are ignored)."""
        mine = [(key, value) for key, value in records if record_partition(key) == partition]
        state = PartitionWindows.restore(partition, self.config, mine)
        self.partitions[partition] = state
        if state.open_panes:  # the idle sweep closes them even if the partition gets no further event
            self._last_event_mono.setdefault(partition, self.monotonic())

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Decode and window one message; an undecodable one becomes a dead letter and is skipped."""
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionWindows(partition, self.config)
        self._changed.add(partition)
        self._last_event_mono[partition] = self.monotonic()
        self._applied += 1
        try:
            timing = decode_timing(value)
        except SchemaError as exc:
            self._dead.append(DeadLetter(key, value, str(exc)))
            state.skip_offset(offset)
            return
        state.handle(offset, timing)

    def sweep_idle(self) -> None:
        """Let event time follow wall time on partitions that have been quiet for ``idle_close_s``."""
        now = self.monotonic()
        for partition, last_event in self._last_event_mono.items():
            idle_s = now - last_event
            state = self.partitions.get(partition)
            if state is None or idle_s < self.idle_close_s:
                continue
            base = self._sweep_base.get(partition)
            if base is None or base[0] != last_event:
                base = self._sweep_base[partition] = (last_event, state.watermark.max_event_ns)
            target = base[1] + int(idle_s * NANOS_PER_SECOND)
            if target > state.watermark.max_event_ns:
                state.advance_event_time(target)
                self._changed.add(partition)

    def drain(self, sweep: bool = True) -> CoreOutput:
        """Everything produced since the last drain (after the idle sweep, if ``sweep``)."""
        if sweep:
            self.sweep_idle()
        output = CoreOutput(dead_letters=self._dead)
        self._dead = []
        changed, self._changed = self._changed, set()
        for partition in sorted(changed):
            state = self.partitions.get(partition)
            if state is None:
                continue
            for stats in state.take_emitted():
                output.windows.append((stats.kafka_key(), encode(stats)))
            output.records.extend((partition, key, value) for key, value in state.changelog_records())
        self._emitted += len(output.windows)
        self._dead_count += len(output.dead_letters)
        output.counters = self.counters()
        return output

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer holds (their state lives on in the changelog)."""
        for partition in partitions:
            self.partitions.pop(partition, None)
            self._last_event_mono.pop(partition, None)
            self._sweep_base.pop(partition, None)
            self._changed.discard(partition)

    def counters(self) -> CoreCounters:
        totals = CoreCounters(applied=self._applied, dead_letters=self._dead_count, emitted=self._emitted)
        for state in self.partitions.values():
            totals.duplicates += state.counters.duplicates
            totals.late += state.counters.late
            totals.replayed += state.counters.replayed
        return totals

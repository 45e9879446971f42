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

from tokenpulse.durations import NANOS_PER_SECOND
from tokenpulse.schemas import DeadLetter, SchemaError, encode
from tokenpulse.streams.decoding import decode_timing
from tokenpulse.streams.engine import ChangelogRecord, PartitionCounters, PartitionWindows, WindowConfig


@dataclass
class CoreOutput:
    """What one flush must make durable, in this order: dead letters and windows, then the state."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[tuple[bytes, bytes]] = field(default_factory=list)  # (Kafka key, encoded WindowStats)
    records: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)  # (partition, key, value)


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

    def restore(self, partition: int, records: Sequence[ChangelogRecord]) -> PartitionWindows:
        """Rebuild ``partition`` from changelog records (``PartitionWindows.restore`` skips other partitions')."""
        state = PartitionWindows.restore(partition, self.config, records)
        self.partitions[partition] = state
        if state.open_panes:  # the idle sweep closes them even if the partition gets no further event
            self._last_event_mono.setdefault(partition, self.monotonic())
        return state

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Decode and window one message; an undecodable one becomes a dead letter and is skipped."""
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionWindows(partition, self.config)
        self._changed.add(partition)
        self._last_event_mono[partition] = self.monotonic()
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

    def drain(self) -> CoreOutput:
        """Everything produced since the last drain, after the idle sweep."""
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
        return output

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer holds (their state lives on in the changelog)."""
        for partition in partitions:
            self.partitions.pop(partition, None)
            self._last_event_mono.pop(partition, None)
            self._sweep_base.pop(partition, None)
            self._changed.discard(partition)

    def counters(self) -> PartitionCounters:
        """Outcomes summed over the partitions this worker holds."""
        totals = PartitionCounters()
        for state in self.partitions.values():
            totals.accepted += state.counters.accepted
            totals.duplicates += state.counters.duplicates
            totals.late += state.counters.late
            totals.replayed += state.counters.replayed
        return totals

"""The worker's CPU work, without faust: decode, window, sweep idle partitions, and hand back what to send.

``WindowCore`` owns the ``PartitionWindows`` of every partition this worker holds. The faust shell
(``streams.app``) keeps the offsets and the acks: it passes each partition's messages in offset order to
``apply`` and, on every flush, takes the dead letters, the encoded ``WindowStats`` and the changelog
records from ``drain``. The core is plain synchronous Python, tested without a broker.

Event time is bounded by wall time here, before the windows see an event: one whose ``started_at`` is
later than this worker's clock plus ``EventTimeBounds.future_tolerance_ns`` (a probe with a wrong clock)
becomes a dead letter with reason ``future_event_time``, and one older than ``max_age_ns`` (the retention
horizon) one with reason ``expired_event_time``; neither moves the watermark. The idle sweep lets event
time follow wall time only while a partition is *live* (the shell says so: connected and caught up with
the partition's end), so a broker outage, a rebalance or a slow producer is never mistaken for a quiet
stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tokenpulse.durations import NANOS_PER_SECOND
from tokenpulse.schemas import DeadLetter, SchemaError, encode
from tokenpulse.streams.decoding import decode_timing
from tokenpulse.streams.engine import ChangelogRecord, PartitionCounters, PartitionWindows, WindowConfig


@dataclass(frozen=True)
class EventTimeBounds:
    """How far an event's ``started_at`` may be from this worker's wall clock."""

    future_tolerance_ns: int = 5 * 60 * NANOS_PER_SECOND
    max_age_ns: int = 35 * 24 * 3600 * NANOS_PER_SECOND

    def __post_init__(self) -> None:
        if self.future_tolerance_ns < 0 or self.max_age_ns <= 0:
            raise ValueError("event time bounds: the future tolerance must be >= 0 and the maximum age > 0")

    def violation(self, started_at_ns: int, now_ns: int) -> str | None:
        """The dead-letter reason for an event time outside the bounds, or None."""
        if started_at_ns > now_ns + self.future_tolerance_ns:
            ahead_s = (started_at_ns - now_ns) / NANOS_PER_SECOND
            return (
                f"future_event_time: started_at is {ahead_s:,.0f} s ahead of the worker's clock (tolerance "
                f"{self.future_tolerance_ns / NANOS_PER_SECOND:,.0f} s): check the probe host's clock"
            )
        if started_at_ns < now_ns - self.max_age_ns:
            age_s = (now_ns - started_at_ns) / NANOS_PER_SECOND
            return (
                f"expired_event_time: started_at is {age_s:,.0f} s old, beyond the worker's retention horizon of "
                f"{self.max_age_ns / NANOS_PER_SECOND:,.0f} s"
            )
        return None


@dataclass
class CoreOutput:
    """What one flush must make durable, in this order: dead letters and windows, then the state."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[tuple[bytes, bytes]] = field(default_factory=list)  # (Kafka key, encoded WindowStats)
    records: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)  # (partition, key, value)


class WindowCore:
    """Window state of the partitions this worker holds; synchronous, fed in offset order per partition."""

    def __init__(
        self,
        config: WindowConfig,
        idle_close_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        bounds: EventTimeBounds | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.idle_close_s = idle_close_s
        self.monotonic = monotonic
        self.bounds = bounds or EventTimeBounds()
        self.wall_ns = wall_ns
        self.future_events = 0
        self.expired_events = 0
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
        reason = self.bounds.violation(timing.started_at, self.wall_ns())
        if reason is not None:
            if reason.startswith("future"):
                self.future_events += 1
            else:
                self.expired_events += 1
            self._dead.append(DeadLetter(key, value, reason))
            state.skip_offset(offset)
            return
        state.handle(offset, timing)

    def sweep_idle(self, live: Callable[[int], bool] | None = None) -> None:
        """Let event time follow wall time on partitions that have been quiet for ``idle_close_s``.

        Quiet time counts only while ``live(partition)`` (connected and caught up with the partition's end;
        ``None``: always): a partition that is not live starts its quiet time again.
        """
        now = self.monotonic()
        for partition, last_event in list(self._last_event_mono.items()):
            state = self.partitions.get(partition)
            if state is not None and live is not None and not live(partition):
                self._last_event_mono[partition] = now
                continue
            idle_s = now - last_event
            if state is None or idle_s < self.idle_close_s:
                continue
            base = self._sweep_base.get(partition)
            if base is None or base[0] != last_event:
                base = self._sweep_base[partition] = (last_event, state.watermark.max_event_ns)
            target = base[1] + int(idle_s * NANOS_PER_SECOND)
            if target > state.watermark.max_event_ns:
                state.advance_event_time(target)
                self._changed.add(partition)

    def drain(self, live: Callable[[int], bool] | None = None) -> CoreOutput:
        """Everything produced since the last drain, after the idle sweep (``live``: see ``sweep_idle``)."""
        self.sweep_idle(live)
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

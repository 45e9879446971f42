"""The windowing state machine of one source partition: dedup, panes, late events, emission, snapshots.

Pure and synchronous (no faust, no Kafka): the worker feeds it ``(offset, RequestTiming)`` in offset order
and ships what it returns. Every decision depends only on the events and their order, never on wall
time, so replaying a partition after a crash reproduces the same ``WindowStats``:

* a window is emitted when it is *complete* (an event at or after its end was seen) and again when it
  *closes* (the watermark, latest event time minus grace, passes its end); the second emission includes
  late events that arrived within grace and is final;
* each pane remembers the source offset it last applied, so events replayed after a crash (offsets at
  or below it) are recognised and skipped instead of counted twice;
* event ids are remembered per pane (``DedupHorizon``) so producer retries and spool replays count once;
* ``changelog_records`` returns the new event ids of changed panes (append-only chunks of at most
  ``ID_CHUNK`` raw 16-byte ids, each sent once), the changed panes, a partition meta record, and the
  tombstones of dropped panes and their id chunks, in that order, for a compacted changelog topic. No record
  grows with its pane: a pane record counts its chunks instead of carrying its ids. ``restore`` rebuilds the
  state from those records, and from any prefix of them that a crash left durable (a chunk the pane record
  does not count yet is ignored: its events are replayed).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenpulse.durations import parse_duration_ns
from tokenpulse.schemas import RequestTiming, WindowStats
from tokenpulse.streams.aggregate import PaneAccumulator, StatsKey, window_stats
from tokenpulse.streams.dedup import ID_BYTES, DedupHorizon
from tokenpulse.streams.watermark import Watermark
from tokenpulse.streams.windows import WindowSpec, pane_size_ns, parse_window_specs

ChangelogRecord = tuple[bytes, bytes | None]

ID_CHUNK = 4096
"""Event ids per changelog id chunk: 64 KiB of raw ids, far below Kafka's 1 MB record limit."""


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REPLAYED = "replayed"
    LATE = "late"


@dataclass(frozen=True)
class WindowConfig:
    """Which windows to keep, how long to wait for late events, how many event ids to remember."""

    specs: tuple[WindowSpec, ...]
    grace_ns: int
    dedup_max_ids: int = 2_000_000

    @classmethod
    def parse(cls, windows: Sequence[str], grace: str, dedup_max_ids: int = 2_000_000) -> WindowConfig:
        """E.g. ``WindowConfig.parse(["1m", "5m/1m"], "10s")``."""
        return cls(parse_window_specs(windows), parse_duration_ns(grace), dedup_max_ids)


@dataclass
class PartitionCounters:
    accepted: int = 0
    duplicates: int = 0
    replayed: int = 0
    late: int = 0


@dataclass
class _Pane:
    acc: PaneAccumulator = field(default_factory=PaneAccumulator)
    offset: int = -1  # the last source offset applied: a replay is at or below it and among the pane ids
    version: int = 0  # bumped on every change: a window whose panes did not change need not be re-emitted
    id_chunks: int = 0  # id chunk records of this pane in the changelog


class PartitionWindows:
    """Window state of one source partition (all keys whose events arrive on it)."""

    def __init__(self, partition: int, config: WindowConfig) -> None:
        self.partition = partition
        self.config = config
        self.pane_ns = pane_size_ns(config.specs)
        self.watermark = Watermark(config.grace_ns)
        self.dedup = DedupHorizon(config.dedup_max_ids)
        self.counters = PartitionCounters()
        self.last_offset = -1
        self._panes: dict[StatsKey, dict[int, _Pane]] = {}
        self._dirty: set[tuple[StatsKey, int]] = set()
        self._new_ids: dict[tuple[StatsKey, int], list[bytes]] = {}  # ids not yet in a changelog chunk
        self._dropped_chunks: dict[tuple[StatsKey, int], int] = {}  # dropped panes -> their chunks to tombstone
        self._emitted: list[WindowStats] = []
        self._provisional: dict[tuple[StatsKey, int, int], tuple[tuple[int, int], ...]] = {}

    # ---- input -------------------------------------------------------------------------------------
    def handle(self, offset: int, event: RequestTiming) -> Outcome:
        """Apply one event (offsets must increase); emitted windows queue up for ``take_emitted``."""
        t = event.started_at
        key = StatsKey(event.provider, event.model, event.workload, event.region)
        pane_start = t - t % self.pane_ns
        key_panes = self._panes.get(key)
        pane = key_panes.get(pane_start) if key_panes else None
        self.last_offset = offset
        # A replay after a crash: at or below the offset this pane last applied, and (while the horizon has
        # evicted nothing) its id is in the pane. The id check keeps an event that Kafka delivers out of
        # offset order after a restart (a fetch that started before the seek to the committed offsets)
        # from being mistaken for one it already applied.
        if (
            pane is not None
            and offset <= pane.offset
            and (self.dedup.evicted_ids or self.dedup.seen((key, pane_start), event.event_id.bytes))
        ):
            outcome = Outcome.REPLAYED
            self.counters.replayed += 1
        else:
            outcome = self._apply(offset, event, key, pane_start, pane)
        advance = self.watermark.observe(t)
        if advance is not None:
            self._advance(*advance)
        return outcome

    def skip_offset(self, offset: int) -> None:
        """Record ``offset`` as handled without an event (a dead letter): the next one applied follows it."""
        self.last_offset = offset

    def advance_event_time(self, event_ns: int) -> None:
        """Move event time forward without an event (the idle sweep); emits and closes what is due."""
        advance = self.watermark.observe(event_ns)
        if advance is not None:
            self._advance(*advance)

    def _apply(self, offset: int, event: RequestTiming, key: StatsKey, pane_start: int, pane: _Pane | None) -> Outcome:
        scope = (key, pane_start)
        event_id = event.event_id.bytes
        if self.dedup.seen(scope, event_id):
            self.counters.duplicates += 1
            return Outcome.DUPLICATE
        late_specs: list[WindowSpec] = []
        wm = self.watermark.watermark_ns
        # every window containing a pane ends at or after the pane's end: the common case needs no search
        if self.watermark.started and pane_start + self.pane_ns <= wm:
            late_specs = [spec for spec in self.config.specs if spec.latest_end_containing(pane_start) <= wm]
        if late_specs:
            self._count_late(key, late_specs, offset)
            if len(late_specs) == len(self.config.specs):
                self.counters.late += 1
                return Outcome.LATE
        self.dedup.first_seen(scope, event_id)
        self._new_ids.setdefault(scope, []).append(event_id)
        if pane is None:
            pane = self._pane(key, pane_start)
        pane.acc.add(event)
        pane.offset = max(pane.offset, offset)
        pane.version += 1
        self._dirty.add((key, pane_start))
        self.counters.accepted += 1
        return Outcome.ACCEPTED

    def _pane(self, key: StatsKey, pane_start: int) -> _Pane:
        key_panes = self._panes.setdefault(key, {})
        pane = key_panes.get(pane_start)
        if pane is None:
            pane = key_panes[pane_start] = _Pane()
        return pane

    def _count_late(self, key: StatsKey, specs: Iterable[WindowSpec], offset: int) -> None:
        # Counted in the oldest window of the spec that is still open, so it is emitted exactly once.
        wm = self.watermark.watermark_ns
        targets = [(spec.first_end_after(wm) - self.pane_ns, spec.label) for spec in specs]
        panes = {pane_start: self._pane(key, pane_start) for pane_start, _ in targets}
        replayed = {pane_start for pane_start, pane in panes.items() if offset <= pane.offset}
        for pane_start, label in targets:
            if pane_start in replayed:
                continue  # replayed after a crash: counted before it
            pane = panes[pane_start]
            pane.acc.add_late(label)
            pane.offset = offset
            pane.version += 1
            self._dirty.add((key, pane_start))

    # ---- event-time progress ---------------------------------------------------------------------
    def _advance(self, old_ns: int, new_ns: int) -> None:
        p, grace = self.pane_ns, self.config.grace_ns
        if old_ns // p == new_ns // p and (old_ns - grace) // p == (new_ns - grace) // p:
            return  # window ends are multiples of the pane size: none was crossed
        due: set[tuple[int, int, StatsKey]] = set()
        for key, key_panes in self._panes.items():
            for pane_start in key_panes:
                for index, spec in enumerate(self.config.specs):
                    for _, end in spec.windows_containing(pane_start):
                        if old_ns < end <= new_ns or old_ns - grace < end <= new_ns - grace:
                            due.add((end, index, key))
        closing_after = new_ns - grace
        for end, index, key in sorted(due, key=lambda item: (item[0], item[1], repr(item[2]))):
            spec = self.config.specs[index]
            fingerprint = self._fingerprint(key, spec, end)
            window_id = (key, index, end)
            closes = end <= closing_after
            if closes and self._provisional.pop(window_id, None) == fingerprint:
                continue  # closing unchanged since its first emission: the same content is downstream
            stats = self.window(key, spec, end)
            if stats is not None:
                self._emitted.append(stats)
                if not closes:
                    self._provisional[window_id] = fingerprint
        self._drop_closed_panes()

    def _fingerprint(self, key: StatsKey, spec: WindowSpec, end_ns: int) -> tuple[tuple[int, int], ...]:
        start = end_ns - spec.size_ns
        key_panes = self._panes.get(key, {})
        return tuple((s, pane.version) for s, pane in sorted(key_panes.items()) if start <= s < end_ns)

    def _drop_closed_panes(self) -> None:
        wm = self.watermark.watermark_ns
        for key in list(self._panes):
            key_panes = self._panes[key]
            for pane_start in [s for s in key_panes if self._pane_closed(s, wm)]:
                dropped = key_panes.pop(pane_start)
                scope = (key, pane_start)
                self._dropped_chunks[scope] = max(self._dropped_chunks.get(scope, 0), dropped.id_chunks)
                self._new_ids.pop(scope, None)
                self.dedup.forget((key, pane_start))
                self._dirty.add((key, pane_start))
            if not key_panes:
                del self._panes[key]

    def _pane_closed(self, pane_start: int, wm: int) -> bool:
        return all(spec.latest_end_containing(pane_start) <= wm for spec in self.config.specs)

    def window(self, key: StatsKey, spec: WindowSpec, end_ns: int) -> WindowStats | None:
        """Current ``WindowStats`` of one window, or None if it holds no event and no late event."""
        key_panes = self._panes.get(key, {})
        start = end_ns - spec.size_ns
        panes = [pane.acc for pane_start, pane in key_panes.items() if start <= pane_start < end_ns]
        last = key_panes.get(end_ns - self.pane_ns)
        late = last.acc.late_events.get(spec.label, 0) if last is not None else 0
        if late == 0 and not any(acc.count for acc in panes):
            return None
        return window_stats(key, spec.label, start, end_ns, panes, late)

    def take_emitted(self) -> list[WindowStats]:
        """Windows emitted since the last call, in emission order (the latest one of a key wins)."""
        emitted, self._emitted = self._emitted, []
        return emitted

    @property
    def open_windows(self) -> int:
        """Windows (key, spec, end) not yet closed that hold at least one pane."""
        wm = self.watermark.watermark_ns
        windows = {
            (key, index, end)
            for key, key_panes in self._panes.items()
            for pane_start in key_panes
            for index, spec in enumerate(self.config.specs)
            for _, end in spec.windows_containing(pane_start)
            if end > wm
        }
        return len(windows)

    @property
    def open_panes(self) -> int:
        return sum(len(key_panes) for key_panes in self._panes.values())

    # ---- snapshots -------------------------------------------------------------------------------
    def changelog_records(self) -> list[ChangelogRecord]:
        """Changed panes, then this partition's meta record, then tombstones of dropped panes; clears the changes.

        The order matters: the worker writes them in this order to one changelog partition, so a crash leaves
        a prefix of them durable. Pane updates without their meta are recognised on replay (offsets and ids
        in the pane); a tombstone only lands after the meta that moved the watermark past its pane, so a
        replay never re-creates a dropped pane from part of its events.
        """
        records: list[ChangelogRecord] = []
        tombstones: list[ChangelogRecord] = []
        for key, pane_start in sorted(self._dirty, key=repr):
            scope = (key, pane_start)
            pane = self._panes.get(key, {}).get(pane_start)
            record_key = orjson.dumps(["pane", self.partition, *key, pane_start])
            if pane is None:
                tombstones.append((record_key, None))
                for chunk in range(self._dropped_chunks.pop(scope, 0)):
                    tombstones.append((id_chunk_key(self.partition, key, pane_start, chunk), None))
                continue
            new_ids = self._new_ids.pop(scope, [])
            for start in range(0, len(new_ids), ID_CHUNK):
                chunk_key = id_chunk_key(self.partition, key, pane_start, pane.id_chunks)
                records.append((chunk_key, b"".join(new_ids[start : start + ID_CHUNK])))
                pane.id_chunks += 1
            value = {"acc": pane.acc.to_state(), "offset": pane.offset, "id_chunks": pane.id_chunks}
            records.append((record_key, orjson.dumps(value)))
        self._dirty.clear()
        meta = {"max_event_ns": self.watermark.max_event_ns, "last_offset": self.last_offset}
        records.append((meta_record_key(self.partition), orjson.dumps(meta)))
        return records + tombstones

    @classmethod
    def restore(cls, partition: int, config: WindowConfig, records: Iterable[ChangelogRecord]) -> PartitionWindows:
        """Rebuild from changelog records (later records of a key win; others' partitions are ignored)."""
        state = cls(partition, config)
        chunks: dict[tuple[StatsKey, int], dict[int, bytes]] = {}
        for record_key, value in records:
            kind, record_partition, *rest = orjson.loads(record_key)
            if record_partition != partition:
                continue
            if kind == "meta":
                if value is not None:
                    meta = orjson.loads(value)
                    state.watermark.max_event_ns = meta["max_event_ns"]
                    state.last_offset = meta["last_offset"]
                continue
            if kind == "ids":
                *key_parts, pane_start, chunk = rest
                pane_chunks = chunks.setdefault((StatsKey(*key_parts), pane_start), {})
                if value is None:
                    pane_chunks.pop(chunk, None)
                else:
                    pane_chunks[chunk] = value
                continue
            provider, model, workload, region, pane_start = rest
            key = StatsKey(provider, model, workload, region)
            if value is None:
                state._panes.get(key, {}).pop(pane_start, None)
                state.dedup.forget((key, pane_start))
                continue
            document: dict[str, Any] = orjson.loads(value)
            pane = state._pane(key, pane_start)
            pane.acc = PaneAccumulator.from_state(document["acc"])
            pane.offset = document["offset"]
            pane.id_chunks = document.get("id_chunks", 0)
            if "ids" in document:  # written before id chunks (one record with all of a pane's ids)
                state.dedup.restore((key, pane_start), base64.b64decode(document["ids"]))
        for key, key_panes in state._panes.items():
            for pane_start, pane in key_panes.items():
                found = chunks.get((key, pane_start), {})
                counted = [found[n] for n in range(pane.id_chunks) if n in found]  # later chunks: not yet counted
                if counted:
                    packed = b"".join(counted)
                    assert len(packed) % ID_BYTES == 0
                    state.dedup.restore((key, pane_start), packed)
        return state


def id_chunk_key(partition: int, key: StatsKey, pane_start: int, chunk: int) -> bytes:
    return orjson.dumps(["ids", partition, *key, pane_start, chunk])


def meta_record_key(partition: int) -> bytes:
    return orjson.dumps(["meta", partition])


def record_partition(record_key: bytes) -> int:
    """The source partition a changelog record belongs to."""
    return int(orjson.loads(record_key)[1])

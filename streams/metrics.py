"""``tokenpulse_worker_*``: the stream worker's collector.

The worker's open windows and panes need a walk over its pane dicts, which its event loop changes: that
snapshot is taken on the worker's loop (``call_on_loop``); if the loop does not get to it within the timeout
the scrape fails, which Prometheus reports as ``up == 0`` for the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from tokenpulse.metrics import call_on_loop, counter, gauge

if TYPE_CHECKING:
    from tokenpulse.streams.app import WindowProcessor, WorkerCounters
    from tokenpulse.streams.engine import PartitionCounters

__all__ = ["PartitionSnapshot", "WorkerCollector", "WorkerSnapshot", "worker_metrics", "worker_snapshot"]


@dataclass(frozen=True)
class PartitionSnapshot:
    partition: int
    accepted: int
    duplicates: int
    replayed: int
    late: int
    open_windows: int
    open_panes: int
    max_event_ns: int


@dataclass(frozen=True)
class WorkerSnapshot:
    """The worker's counters and window state at one moment (taken on its event loop)."""

    counters: WorkerCounters
    pending: int
    partitions: tuple[PartitionSnapshot, ...]


def worker_snapshot(processor: WindowProcessor) -> WorkerSnapshot:
    """Copy what ``WorkerCollector`` reports; must run where ``processor`` is changed (its event loop)."""
    partitions = []
    for partition, state in sorted(processor.core.partitions.items()):
        counters: PartitionCounters = state.counters
        snapshot = PartitionSnapshot(
            partition,
            counters.accepted,
            counters.duplicates,
            counters.replayed,
            counters.late,
            state.open_windows,
            state.open_panes,
            state.watermark.max_event_ns,
        )
        partitions.append(snapshot)
    return WorkerSnapshot(dataclasses.replace(processor.counters), processor.pending, tuple(partitions))


class WorkerCollector(Collector):
    """``tokenpulse_worker_*``: the stream worker's ``WorkerCounters``, per-partition outcomes and window state.

    The snapshot is taken on ``loop`` (the faust worker's event loop) while it runs, else in the calling thread.
    """

    def __init__(
        self, processor: WindowProcessor, *, loop: asyncio.AbstractEventLoop | None = None, timeout_s: float = 5.0
    ) -> None:
        self.processor = processor
        self.loop = loop
        self.timeout_s = timeout_s

    def collect(self) -> Iterator[Metric]:
        snapshot = call_on_loop(self.loop, lambda: worker_snapshot(self.processor), self.timeout_s)
        return iter(worker_metrics(snapshot))


def worker_metrics(snapshot: WorkerSnapshot) -> list[Metric]:
    c = snapshot.counters
    totals = [
        ("events_consumed", "messages read from the request-timings topic (redeliveries included)", c.consumed),
        ("dead_letters", "invalid events sent to the dead-letter topic", c.dead_letters),
        ("windows_emitted", "WindowStats sent to the window-stats topic", c.emitted),
        ("flushes", "flushes that made outputs and state durable and acked events", c.flushes),
        ("events_redelivered", "messages at or below their partition's applied offset, skipped", c.redelivered),
        ("offset_gaps", "times a partition skipped an offset and was sought back", c.offset_gaps),
        ("future_events", "events dated beyond this host's clock plus tolerance (future_event_time)", c.future_events),
        ("expired_events", "events older than the retention horizon (expired_event_time)", c.expired_events),
    ]
    metrics: list[Metric] = []
    for what, documentation, value in totals:
        family = counter(f"tokenpulse_worker_{what}_total", f"Worker: {documentation}.")
        family.add_metric([], value)
        metrics.append(family)
    outcomes = counter(
        "tokenpulse_worker_partition_events_total",
        "Worker: events applied to a partition's windows, by outcome (accepted, duplicate, replayed, late); "
        "restarts from zero when the partition moves to this worker.",
        ["partition", "outcome"],
    )
    open_windows = gauge("tokenpulse_worker_open_windows", "Worker: windows not yet closed.", ["partition"])
    open_panes = gauge("tokenpulse_worker_open_panes", "Worker: panes held in memory.", ["partition"])
    event_time = gauge(
        "tokenpulse_worker_event_time_seconds", "Worker: latest event time seen (Unix seconds).", ["partition"]
    )
    for p in snapshot.partitions:
        label = str(p.partition)
        for outcome, value in (
            ("accepted", p.accepted),
            ("duplicate", p.duplicates),
            ("replayed", p.replayed),
            ("late", p.late),
        ):
            outcomes.add_metric([label, outcome], value)
        open_windows.add_metric([label], p.open_windows)
        open_panes.add_metric([label], p.open_panes)
        if p.max_event_ns >= 0:  # -1 until the partition has seen an event
            event_time.add_metric([label], p.max_event_ns / 1e9)
    pending = gauge("tokenpulse_worker_pending_events", "Worker: events applied but not yet acked (next flush).")
    pending.add_metric([], snapshot.pending)
    metrics += [outcomes, open_windows, open_panes, event_time, pending]
    return metrics

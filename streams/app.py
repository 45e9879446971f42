"""The faust worker: a thin shell that feeds ``PartitionWindows`` and ships what it returns.

One agent reads ``RequestTiming`` bytes from the request-timings topic. Each message is decoded with
``schemas``; a bad one is queued for the dead-letter topic. Good ones go to the ``PartitionWindows`` of
their source partition. Acks are manual: every ``flush_interval_s`` (or ``flush_every_events``) the
worker sends, and waits for, the dead letters, the emitted ``WindowStats`` and the changed window state
(to the changelog of a faust ``Table``, partition for partition with the source), and only then acks
the events, so faust never commits an offset whose effects are not durable. After a crash the state
comes back from the changelog, the uncommitted events are replayed, and each pane skips the offsets it
has already applied: counts stay exact.

faust's own windowed tables are not used: their expiry runs on wall-clock time and ``on_window_close``
does not fire for windows restored after a restart or rebalance (faust issues #250, #118).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from schemas import SchemaError, encode
from streams.decoding import decode_timing
from streams.engine import PartitionWindows, WindowConfig, record_partition
from tokenpulse.config import Settings

log = logging.getLogger("tokenpulse.worker")
NANOS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class WorkerConfig:
    """How the worker windows and how it talks to Kafka; defaults suit production, tests shorten them.

    ``session_timeout_s`` is 8 s (faust's default is 60 s): a SIGKILLed worker's partitions move to
    another worker after at most that long plus a rebalance, well inside the 15 s target.
    ``idle_close_s``: a partition without events for this long lets its event time follow wall time, so
    the last windows of a quiet stream still close.
    """

    windows: tuple[str, ...] = ("1m", "5m/1m")
    grace: str = "10s"
    partitions: int = 6
    app_id: str | None = None
    data_dir: Path | None = None
    session_timeout_s: float = 8.0
    heartbeat_interval_s: float = 2.0
    flush_interval_s: float = 0.5
    flush_every_events: int = 50_000  # backpressure: the agent waits for a flush beyond this many unacked events
    idle_close_s: float = 30.0
    stream_buffer_maxsize: int = 32_768
    recovery_delay_s: float = 1.0
    dedup_max_ids: int = 2_000_000
    log_level: str = "info"

    def window_config(self) -> WindowConfig:
        return WindowConfig.parse(self.windows, self.grace, self.dedup_max_ids)

    def resolved_app_id(self, settings: Settings) -> str:
        return self.app_id or f"{settings.topic_prefix or 'tokenpulse'}-worker"


@dataclass
class WorkerCounters:
    consumed: int = 0
    dead_letters: int = 0
    emitted: int = 0
    flushes: int = 0


@dataclass
class _DeadLetter:
    key: bytes | None
    value: bytes | None
    error: str


class WindowProcessor:
    """Per-partition window state of this worker, its pending acks and its outgoing records."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        table: Any,
        stats_topic: Any,
        dlq_topic: Any,
        source_topic: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.window_config = config.window_config()
        self.table = table
        self.stats_topic = stats_topic
        self.dlq_topic = dlq_topic
        self.source_topic = source_topic
        self.monotonic = monotonic
        self.counters = WorkerCounters()
        self.partitions: dict[int, PartitionWindows] = {}
        self._last_event_mono: dict[int, float] = {}
        self._sweep_base: dict[int, tuple[float, int]] = {}  # last event time -> event time at that moment
        self._last_report_mono = monotonic()
        self._changed: set[int] = set()
        self._pending: list[Any] = []
        self._dead: list[_DeadLetter] = []
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def on_message(self, event: Any) -> None:
        """Handle one faust event (synchronously; its ack waits for the next flush)."""
        message = event.message
        partition = message.partition
        self._pending.append(event)
        self.counters.consumed += 1
        raw = message.value
        try:
            timing = decode_timing(raw)
        except SchemaError as exc:
            self._dead.append(_DeadLetter(message.key, raw, str(exc)))
            return
        state = self.partitions.get(partition)
        if state is None:
            state = self._restore(partition)
        state.handle(message.offset, timing)
        self._changed.add(partition)
        self._last_event_mono[partition] = self.monotonic()

    def _restore(self, partition: int) -> PartitionWindows:
        records = [(k, v) for k, v in list(self.table.data.items()) if record_partition(k) == partition]
        state = PartitionWindows.restore(partition, self.window_config, records)
        log.info(
            "partition %d: restored %d open panes from %d changelog records, event time %d, last offset %d",
            partition,
            state.open_panes,
            len(records),
            state.watermark.max_event_ns,
            state.last_offset,
        )
        self.partitions[partition] = state
        return state

    def on_assigned(self, partitions: Iterable[int]) -> None:
        """Rebuild every newly assigned partition from the recovered table, before its events flow.

        Called when faust has finished recovering the changelog (``on_rebalance_complete``), so a partition
        whose windows are open but which gets no further event still has them closed by the idle sweep,
        and the restore never races a replayed event. The lazy restore in ``on_message`` stays as a guard.
        """
        now = self.monotonic()
        for partition in sorted(partitions):
            if partition in self.partitions:
                continue
            state = self._restore(partition)
            if state.open_panes:
                self._last_event_mono.setdefault(partition, now)

    def sweep_idle(self) -> None:
        """Let event time follow wall time on partitions that have been quiet for ``idle_close_s``."""
        now = self.monotonic()
        for partition, last_event in self._last_event_mono.items():
            idle_s = now - last_event
            state = self.partitions.get(partition)
            if state is None or idle_s < self.config.idle_close_s:
                continue
            base = self._sweep_base.get(partition)
            if base is None or base[0] != last_event:
                base = self._sweep_base[partition] = (last_event, state.watermark.max_event_ns)
            target = base[1] + int(idle_s * NANOS_PER_SECOND)
            if target > state.watermark.max_event_ns:
                state.advance_event_time(target)
                self._changed.add(partition)

    def report(self, every_s: float = 30.0) -> None:
        """Log the counters (consumed, dead letters, duplicates, late, replayed) every ``every_s``."""
        now = self.monotonic()
        if now - self._last_report_mono < every_s:
            return
        self._last_report_mono = now
        totals = {"duplicates": 0, "late": 0, "replayed": 0}
        for state in self.partitions.values():
            totals["duplicates"] += state.counters.duplicates
            totals["late"] += state.counters.late
            totals["replayed"] += state.counters.replayed
        log.info(
            "consumed %d, dead letters %d, windows emitted %d, duplicates %d, late %d, replayed %d",
            self.counters.consumed,
            self.counters.dead_letters,
            self.counters.emitted,
            totals["duplicates"],
            totals["late"],
            totals["replayed"],
        )

    async def flush(self) -> None:
        """Send dead letters, emitted windows and changed state; wait for them; then ack the events."""
        async with self._lock:
            pending, self._pending = self._pending, []
            dead, self._dead = self._dead, []
            changed, self._changed = self._changed, set()
            emitted = [
                stats for p in sorted(changed) if p in self.partitions for stats in self.partitions[p].take_emitted()
            ]
            records = [
                (p, key, value)
                for p in sorted(changed)
                if p in self.partitions
                for key, value in self.partitions[p].changelog_records()
            ]
            if not (pending or dead or emitted or records):
                return
            futures: list[Any] = []
            for letter in dead:
                headers = [("error", letter.error.encode()), ("source-topic", self.source_topic.encode())]
                futures.append(await self.dlq_topic.send(key=letter.key, value=letter.value, headers=headers))
            for stats in emitted:
                futures.append(await self.stats_topic.send(key=stats.kafka_key(), value=encode(stats)))
            for partition, key, value in records:
                futures.append(self.table.send_changelog(partition, key, value))
                if value is None:
                    self.table.data.pop(key, None)
                else:
                    self.table.data[key] = value
            await asyncio.gather(*futures)
            # A future of a buffered send can resolve before the broker has the record; flushing the producer
            # makes every changelog record, window and dead letter durable before the acks below.
            await self.table.app.producer.flush()
            for event in pending:
                event.ack()  # Event.ack: marks the offset committable (Stream.ack only adds sensor calls)
            self.counters.dead_letters += len(dead)
            self.counters.emitted += len(emitted)
            self.counters.flushes += 1

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (their state lives on in the changelog)."""
        for partition in partitions:
            self.partitions.pop(partition, None)
            self._last_event_mono.pop(partition, None)
            self._sweep_base.pop(partition, None)


@dataclass
class WorkerApp:
    """The faust app and the processor it drives (``app.main()`` or ``run_worker`` starts it)."""

    app: faust.App
    processor: WindowProcessor
    source_topic: str
    extras: dict[str, Any] = field(default_factory=dict)


def faust_settings(settings: Settings, config: WorkerConfig, data_dir: Path) -> dict[str, Any]:
    """The faust settings of the worker (also used by bench/ for a stock agent on equal terms)."""
    return {
        "broker": [f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        "store": "memory://",
        "datadir": str(data_dir),
        "autodiscover": False,
        "web_enabled": False,
        "topic_partitions": config.partitions,
        "topic_replication_factor": 1,
        "table_standby_replicas": 0,
        "broker_session_timeout": config.session_timeout_s,
        "broker_heartbeat_interval": config.heartbeat_interval_s,
        "broker_commit_interval": max(config.flush_interval_s, 1.0),
        "consumer_auto_offset_reset": "earliest",
        "stream_buffer_maxsize": config.stream_buffer_maxsize,
        "stream_wait_empty": True,
        "producer_linger_ms": 5,
        # throughput: bigger fetches and polls (fetch wait is fixed at 1.5 s by faust's aiokafka driver)
        "consumer_max_fetch_size": 4 * 1024 * 1024,
        "broker_max_poll_records": 5_000,
        # resume quickly after a rebalance (faust waits this long before recovery; default 3 s)
        "stream_recovery_delay": config.recovery_delay_s,
    }


def build_worker(settings: Settings, config: WorkerConfig) -> WorkerApp:
    """The faust app for ``settings`` (broker, topic names) and ``config`` (windows, grace, tuning)."""
    topics = settings.topics
    data_dir = config.data_dir or settings.data_dir / "worker"
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(config.resolved_app_id(settings), **faust_settings(settings, config, data_dir))
    source = app.topic(
        topics.request_timings, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=config.partitions,
    )  # fmt: skip
    stats_topic = app.topic(topics.window_stats, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(topics.request_timings_dlq, key_serializer="raw", value_serializer="raw")
    table = app.Table(
        "window-panes",
        default=None,
        partitions=config.partitions,
        key_type=bytes,  # bytes -> the "raw" serializer for the changelog, both ways
        value_type=bytes,
    )  # fmt: skip
    processor = WindowProcessor(
        config, table=table, stats_topic=stats_topic, dlq_topic=dlq_topic, source_topic=topics.request_timings
    )

    @app.agent(source, name="window-aggregator")
    async def aggregate(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            processor.on_message(event)
            if processor.pending >= config.flush_every_events:
                await processor.flush()

    @app.timer(config.flush_interval_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        processor.sweep_idle()
        await processor.flush()
        processor.report()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalance_complete(sender: Any, **_: Any) -> None:
        # sent by faust's recovery after the changelog is read, before the streams resume
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.request_timings}
        processor.on_assigned(assigned)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        await processor.flush()
        processor.drop(tp.partition for tp in revoked if tp.topic == topics.request_timings)

    return WorkerApp(app, processor, topics.request_timings, {"agent": aggregate, "tick": tick})


def tune_runtime() -> None:
    """uvloop, and a young-generation GC threshold suited to many short-lived objects per event."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform but Windows
        pass
    gc.set_threshold(50_000, 20, 50)


def run_worker(settings: Settings, config: WorkerConfig) -> None:
    """Run the worker in this process until SIGINT/SIGTERM (uvloop when available)."""
    tune_runtime()
    worker_app = build_worker(settings, config)
    worker = faust.Worker(worker_app.app, loglevel=config.log_level.upper(), quiet=True)
    worker.execute_from_commandline()

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
import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from tokenpulse.config import Settings
from tokenpulse.durations import parse_duration_ns
from tokenpulse.metrics import MetricsEndpoint, serve_metrics
from tokenpulse.private_files import private_dir
from tokenpulse.streams.core import EventTimeBounds, WindowCore
from tokenpulse.streams.engine import WindowConfig, record_partition
from tokenpulse.streams.metrics import WorkerCollector
from tokenpulse.topics import (
    REQUEST_TIMINGS_PARTITIONS,
    broker_default_replication,
    ensure_topic,
    too_few_partitions,
)

log = logging.getLogger("tokenpulse.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """How the worker windows and how it talks to Kafka; defaults suit production, tests shorten them.

    ``session_timeout_s`` is 6 s (faust's default is 60 s; 6 s is the broker's default minimum): a SIGKILLed
    worker's partitions move to another worker after at most that long plus a rebalance and the changelog
    recovery, inside the 15 s target (about 8 s more here).
    ``idle_close_s``: a partition without events for this long lets its event time follow wall time, so
    the last windows of a quiet stream still close.
    """

    windows: tuple[str, ...] = ("1m", "5m/1m")
    grace: str = "10s"
    partitions: int = REQUEST_TIMINGS_PARTITIONS
    app_id: str | None = None
    data_dir: Path | None = None
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.5
    flush_interval_s: float = 0.5
    flush_every_events: int = 50_000  # backpressure: the agent waits for a flush beyond this many unacked events
    idle_close_s: float = 30.0
    stream_buffer_maxsize: int = 32_768
    recovery_delay_s: float = 1.0
    dedup_max_ids: int = 2_000_000
    log_level: str = "info"
    max_future: str = "5m"
    """An event whose ``started_at`` is further ahead of this worker's clock is a ``future_event_time`` dead letter."""
    max_event_age: str = "35d"
    """The retention horizon (that of the raw InfluxDB bucket, ``influx init``): an older event is an
    ``expired_event_time`` dead letter."""
    replication_factor: int | None = None
    """Replication of the topics faust creates (changelog); ``None``: the broker's ``default.replication.factor``."""
    standby_replicas: int = 0
    """Standby copies of the window state on other workers (faust's ``table_standby_replicas``)."""

    def window_config(self) -> WindowConfig:
        return WindowConfig.parse(self.windows, self.grace, self.dedup_max_ids)

    def event_time_bounds(self) -> EventTimeBounds:
        return EventTimeBounds(parse_duration_ns(self.max_future), parse_duration_ns(self.max_event_age))

    def resolved_app_id(self, settings: Settings) -> str:
        return self.app_id or f"{settings.topic_prefix or 'tokenpulse'}-worker"


@dataclass
class WorkerCounters:
    consumed: int = 0
    dead_letters: int = 0
    emitted: int = 0
    flushes: int = 0
    redelivered: int = 0
    offset_gaps: int = 0
    future_events: int = 0
    expired_events: int = 0


@dataclass
class _Gap:
    """A partition whose next offset (``expected``) was skipped by the consumer."""

    expected: int
    first_held: int
    sought: bool = False
    log_start: int | None = None


class WindowProcessor:
    """The faust side of the worker: offsets, acks and sends. The windows live in a ``WindowCore``
    (``streams.core``), which knows nothing of faust."""

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
        self.table = table
        self.stats_topic = stats_topic
        self.dlq_topic = dlq_topic
        self.source_topic = source_topic
        self.core = WindowCore(
            config.window_config(), config.idle_close_s, monotonic, bounds=config.event_time_bounds()
        )
        self.live: Callable[[int], bool] | None = None
        """Whether a partition is connected and caught up (set by ``build_worker``); ``None``: always."""
        self.monotonic = monotonic
        self.counters = WorkerCounters()
        self._applied: dict[int, int] = {}  # partition -> last offset handed to the core (-1: none yet)
        self._gaps: dict[int, _Gap] = {}
        self._held: dict[int, list[Any]] = {}  # events past a missing offset, acked once it is applied
        self._pending: list[Any] = []
        self._last_report_mono = monotonic()
        self._lock = asyncio.Lock()

    def applied(self, partition: int) -> int:
        """The last offset of ``partition`` handed to the core (-1: none yet)."""
        return self._applied.get(partition, -1)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def has_gaps(self) -> bool:
        return bool(self._gaps)

    def on_message(self, event: Any) -> None:
        """Take one faust event (synchronously; it is windowed by the core and acked after the next flush).

        Each partition goes to the core in offset order without holes: the processor knows the last offset
        it handed over (restored with the state from the changelog), and the next message must be the one
        after. An offset at or below it is a redelivery (the replay after a restart, or a fetch that faust
        delivers twice) and is skipped. An offset beyond it means a message was not delivered: this happens
        around a rebalance, where faust resumes the partitions before it seeks them to the committed offsets
        and can drop a message on the way. Applying the later one would lose the missing event for good (and
        faust's commit would move past it), so the later ones are held back, unacked, and the partition is
        sought back to the missing offset (``take_seeks``).
        """
        message = event.message
        partition, offset = message.partition, message.offset
        self.counters.consumed += 1
        last = self._applied.get(partition)
        if last is None:
            last = self._restore(partition)
        if offset != last + 1 and last >= 0:
            if offset <= last:
                self.counters.redelivered += 1
                self._pending.append(event)  # already in the state: ack with the next flush
                return
            if not self._accept_gap(partition, last + 1, offset):
                self._held.setdefault(partition, []).append(event)
                return
        if self._gaps:
            self._gaps.pop(partition, None)
        self._applied[partition] = offset
        self._pending.append(event)
        self.core.apply(partition, offset, message.key, message.value)

    def _accept_gap(self, partition: int, expected: int, offset: int) -> bool:
        """Whether to apply ``offset`` although ``expected`` has not been delivered (see ``on_message``).

        The first time, no: seek back to ``expected``. If the partition's log starts after ``expected``
        (the missing offsets were deleted by retention; ``take_seeks`` learns that from the broker), yes.
        If, read again from ``expected`` after the seek, the first record is at ``offset`` (at most the one
        first held back), yes: the broker has no record in between (transaction markers, compaction).
        """
        gap = self._gaps.get(partition)
        if gap is None or gap.expected != expected:
            self.counters.offset_gaps += 1
            log.warning(
                "partition %d: offset %d delivered where %d was next; holding it back and seeking to %d",
                partition,
                offset,
                expected,
                expected,
            )
            self._gaps[partition] = _Gap(expected, offset)
            return False
        if gap.log_start is not None and gap.log_start > expected:
            log.warning(
                "partition %d: offsets %d..%d are gone (the log starts at %d); continuing at %d",
                partition,
                expected,
                gap.log_start - 1,
                gap.log_start,
                offset,
            )
            return True
        if gap.sought and offset <= gap.first_held:
            # Read again from the missing offset, the broker's first record is this one: there is no record
            # at expected..offset-1 (transaction markers, or compacted away). Waiting would hold it forever.
            log.info(
                "partition %d: offsets %d..%d hold no record (transaction markers or compaction); continuing",
                partition,
                expected,
                offset - 1,
            )
            return True
        return False

    async def take_seeks(self, consumer: Any) -> None:
        """Seek every partition with a missing offset back to it (once per gap), via faust's consumer.

        If the partition's log now starts after the missing offset (retention deleted it), seek to the
        log start instead, where reading goes on.
        """
        for partition, gap in self._gaps.items():
            if gap.sought:
                continue
            gap.sought = True
            tp = TP(self.source_topic, partition)
            earliest = await consumer.earliest_offsets(tp)
            gap.log_start = earliest.get(tp)
            # the held events are read again from there (the first one is then accepted if the log starts later)
            await consumer.seek_wait({tp: max(gap.expected, gap.log_start or 0)})

    def _restore(self, partition: int) -> int:
        """Rebuild ``partition`` in the core from the changelog; returns the last offset it had applied."""
        records = [(k, v) for k, v in list(self.table.data.items()) if record_partition(k) == partition]
        state = self.core.restore(partition, records)
        log.info(
            "partition %d: restored %d open panes from %d changelog records, event time %d, last offset %d",
            partition,
            state.open_panes,
            len(records),
            state.watermark.max_event_ns,
            state.last_offset,
        )
        self._applied[partition] = state.last_offset
        return state.last_offset

    def on_assigned(self, partitions: Iterable[int]) -> None:
        """Rebuild every newly assigned partition from the recovered table, before its events flow.

        Called when faust has finished recovering the changelog (``on_rebalance_complete``), so a partition
        whose windows are open but which gets no further event still has them closed by the idle sweep,
        and the restore never races a replayed event. The lazy restore in ``on_message`` stays as a guard.
        """
        for partition in sorted(partitions):
            if partition not in self._applied:
                self._restore(partition)

    def report(self, every_s: float = 30.0) -> None:
        """Log the counters (consumed, dead letters, duplicates, late, replayed) every ``every_s``."""
        now = self.monotonic()
        if now - self._last_report_mono < every_s:
            return
        self._last_report_mono = now
        core = self.core.counters()
        log.info(
            "consumed %d, dead letters %d, windows emitted %d, duplicates %d, late %d, replayed %d, "
            "redelivered %d, offset gaps %d",
            self.counters.consumed,
            self.counters.dead_letters,
            self.counters.emitted,
            core.duplicates,
            core.late,
            core.replayed,
            self.counters.redelivered,
            self.counters.offset_gaps,
        )

    async def flush(self) -> None:
        """Send dead letters, emitted windows and changed state; wait for them; then ack the events.

        The core's idle sweep runs first, so a quiet partition's last windows close on time.
        """
        async with self._lock:
            pending, self._pending = self._pending, []
            drained = dict(self._applied)
            output = self.core.drain(self.live)
            self.counters.future_events = self.core.future_events
            self.counters.expired_events = self.core.expired_events
            if not (pending or output.dead_letters or output.windows or output.records):
                return
            # Two phases. The outputs (dead letters, windows) are made durable before the state that says they
            # were produced: were both sent at once, the producer could deliver the changelog (an advanced
            # watermark, dropped panes) and then die before the window's closing emission, and the replay
            # would find the window closed and never emit it again. In this order a crash between the
            # phases only re-emits the same windows (idempotent downstream).
            outputs: list[Any] = []
            for letter in output.dead_letters:
                headers = letter.headers(self.source_topic)
                outputs.append(await self.dlq_topic.send(key=letter.key, value=letter.value, headers=headers))
            for window_key, window in output.windows:
                outputs.append(await self.stats_topic.send(key=window_key, value=window))
            if outputs:
                await self._durable(outputs)
            state: list[Any] = []
            for partition, key, value in output.records:
                state.append(self.table.send_changelog(partition, key, value))
                if value is None:
                    self.table.data.pop(key, None)
                else:
                    self.table.data[key] = value
            if state:
                await self._durable(state)
            for event in pending:
                event.ack()  # Event.ack: marks the offset committable (Stream.ack only adds sensor calls)
            self._release_held(drained)
            self.counters.dead_letters += len(output.dead_letters)
            self.counters.emitted += len(output.windows)
            self.counters.flushes += 1

    def _release_held(self, drained: dict[int, int]) -> None:
        # A held event whose offset has since been applied and made durable (redelivered after the seek) is
        # acked now: its offset is already committable, so this only tells faust it is done with it.
        for partition, events in list(self._held.items()):
            applied = drained.get(partition, -1)
            done = [event for event in events if event.message.offset <= applied]
            if done:
                for event in done:
                    event.ack()
                self._held[partition] = [event for event in events if event.message.offset > applied]

    async def _durable(self, futures: list[Any]) -> None:
        await asyncio.gather(*futures)
        # A future of a buffered send can resolve before the broker has the record; flushing the producer
        # makes every record durable (acks=all) before the next phase.
        await self.table.app.producer.flush()

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (their state lives on in the changelog)."""
        dropped = list(partitions)
        self.core.drop(dropped)
        # faust's table keeps every key it read or was given; a revoked partition's keys are the next
        # owner's, and are read again from the changelog if the partition comes back.
        gone = set(dropped)
        for key in [k for k in list(self.table.data) if record_partition(k) in gone]:
            self.table.data.pop(key, None)
        for partition in dropped:
            self._applied.pop(partition, None)
            self._gaps.pop(partition, None)
            self._held.pop(partition, None)  # never acked: the next owner reads them again


@dataclass
class WorkerApp:
    """The faust app and the processor it drives (``app.main()`` or ``run_worker`` starts it)."""

    app: faust.App
    processor: WindowProcessor
    source_topic: str
    extras: dict[str, Any] = field(default_factory=dict)


def faust_credentials(settings: Settings) -> dict[str, Any]:
    """faust's ``broker_credentials`` for the Kafka security settings (the same ones kafka-python and
    aiokafka get from ``Settings.kafka_client_options``); empty for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    context = settings.kafka_ssl_context()
    credentials: faust.auth.Credentials
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif protocol == "SSL" and context is not None:
        credentials = faust.SSLCredentials(context)
    else:
        return {}
    return {"broker_credentials": credentials}


def faust_settings(settings: Settings, config: WorkerConfig, data_dir: Path) -> dict[str, Any]:
    """The faust settings of the worker (also used by bench/ for a stock agent on equal terms)."""
    return {
        "broker": [f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        "store": "memory://",
        "datadir": str(data_dir),
        "autodiscover": False,
        "web_enabled": False,
        "topic_partitions": config.partitions,
        "topic_replication_factor": config.replication_factor or 1,
        "table_standby_replicas": config.standby_replicas,
        "broker_session_timeout": config.session_timeout_s,
        "broker_heartbeat_interval": config.heartbeat_interval_s,
        "broker_commit_interval": max(config.flush_interval_s, 1.0),
        **faust_credentials(settings),
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
    private_dir(data_dir)
    app = faust.App(config.resolved_app_id(settings), **faust_settings(settings, config, data_dir))
    source = app.topic(
        topics.request_timings,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=config.partitions,
    )
    stats_topic = app.topic(topics.window_stats, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(topics.request_timings_dlq, key_serializer="raw", value_serializer="raw")
    table = app.Table(
        "window-panes",
        default=None,
        partitions=config.partitions,
        key_type=bytes,  # bytes -> the "raw" serializer for the changelog, both ways
        value_type=bytes,
    )
    processor = WindowProcessor(
        config, table=table, stats_topic=stats_topic, dlq_topic=dlq_topic, source_topic=topics.request_timings
    )

    def live(partition: int) -> bool:
        return partition_caught_up(app.consumer, TP(topics.request_timings, partition), processor.applied(partition))

    processor.live = live

    @app.agent(source, name="window-aggregator")
    async def aggregate(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            processor.on_message(event)
            if processor.has_gaps:
                await processor.take_seeks(app.consumer)
            if processor.pending >= config.flush_every_events:
                await processor.flush()

    @app.timer(config.flush_interval_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
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


LIVE_FETCH_MAX_AGE_MS = 5_000
"""A partition whose last fetch response is older than this is not live (faust's fetch wait is 1.5 s)."""


def partition_caught_up(consumer: Any, tp: TP, applied_offset: int, now_ms: float | None = None) -> bool:
    """Whether ``tp`` is connected and caught up: a fetch answered within ``LIVE_FETCH_MAX_AGE_MS`` and
    every offset below its high watermark applied. Unknown (not started, mid-rebalance): ``False``."""
    try:
        aio = consumer._thread._ensure_consumer()  # faust's aiokafka driver: the aiokafka consumer
        highwater = aio.highwater(tp)
        polled_ms = aio.last_poll_timestamp(tp)
    except Exception:  # not started, or tp not assigned (a rebalance): not live
        return False
    if highwater is None or polled_ms is None:
        return False
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    return bool(now_ms - polled_ms <= LIVE_FETCH_MAX_AGE_MS and applied_offset + 1 >= highwater)


def tune_runtime() -> None:
    """uvloop, and a young-generation GC threshold suited to many short-lived objects per event."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform but Windows
        pass
    gc.set_threshold(50_000, 20, 50)


def source_partitions(settings: Settings, config: WorkerConfig) -> int:
    """The partitions the worker's table must have: those of the request-timings topic, which is created
    with ``config.partitions`` if it does not exist yet.

    The table's changelog is written partition for partition with the source, so the two must match
    whoever created the topic (a probe that started first, say). Fewer partitions than asked for is logged
    as a warning: at most that many workers can share the load. If the topic cannot be checked, faust's own
    start-up reports the broker, and ``config.partitions`` is assumed.
    """
    topic = settings.topics.request_timings
    try:
        found = ensure_topic(
            settings.kafka_bootstrap, topic, config.partitions, client_options=settings.kafka_client_options()
        )
    except Exception as exc:  # kafka-python's errors
        log.warning("could not check or create topic %s (%s: %s)", topic, type(exc).__name__, exc)
        return config.partitions
    if (warning := too_few_partitions(topic, found, config.partitions)) is not None:
        log.warning("%s", warning)
    elif found > config.partitions:
        log.info(
            "topic %s has %d partitions; the worker follows it (not --partitions %d)", topic, found, config.partitions
        )
    return found


def run_worker(settings: Settings, config: WorkerConfig, metrics: MetricsEndpoint | None = None) -> None:
    """Run the worker in this process until SIGINT/SIGTERM (uvloop when available); with ``metrics``
    enabled, serve its counters at ``/metrics`` (read at scrape time, on the worker's event loop)."""
    config = dataclasses.replace(config, partitions=source_partitions(settings, config))
    if config.replication_factor is None:
        config = dataclasses.replace(
            config,
            replication_factor=broker_default_replication(
                settings.kafka_bootstrap, client_options=settings.kafka_client_options()
            ),
        )
    tune_runtime()
    worker_app = build_worker(settings, config)
    worker = faust.Worker(worker_app.app, loglevel=config.log_level.upper(), quiet=True)
    if metrics is not None:
        serve_metrics(metrics, [WorkerCollector(worker_app.processor, loop=worker.loop)])
    worker.execute_from_commandline()

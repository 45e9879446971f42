"""Publishes ``RequestTiming`` events to Kafka through a write-ahead spool, so nothing is lost.

``publish(event)`` claims room in the spool and queues the event; the publisher's own thread writes what
queued in one SQLite transaction every ``group_commit_ms`` (an event is durable within a few ms of its
request's end, before Kafka ever sees it), then hands the spooled rows to a kafka-python producer
(``acks=all``, idempotent, compressed) in ``seq`` order, and deletes each acknowledged prefix. A slow or
absent broker never blocks the probe's event loop: rows simply wait in the spool, and when the broker
answers again they are sent at full speed, oldest first.

Failures and what they do:
- a send that fails after its retries (broker away past ``delivery_timeout_ms``): once every in-flight send
  has its result, sending starts again from the oldest unacknowledged row (acknowledged rows are not re-sent);
- a record the broker refuses for good (too large, invalid): moved to the dead-letter file with the reason
  (``Spool.dead_letter_path``); the rows behind it go on;
- the spool full (``spool_max_bytes``): ``publish`` raises ``SpoolFullError``; the probe stops probing;
- the spool unwritable (disk full, read-only): ``publish`` raises ``SpoolError`` from then on, the thread
  keeps the unwritten events in memory and retries the write; ``close`` sends them straight to Kafka if it
  can and reports any it could not keep in ``PublishStats.unsaved``.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from tokenpulse.producers.spool import DEFAULT_SPOOL_MAX_BYTES, Spool, SpooledRecord, SpoolError, record_size
from tokenpulse.schemas import RequestTiming, encode
from tokenpulse.topics import REQUEST_TIMINGS_PARTITIONS, ensure_topic

log = logging.getLogger(__name__)

__all__ = ["KafkaPublisher", "PublishStats", "PublisherConfig", "kafka_producer"]

PERMANENT_SEND_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordError,
    InvalidTopicError,
)
"""Broker (or client) answers that no retry can change: the record goes to the dead-letter file."""


@dataclass(slots=True)
class PublishStats:
    """Counters of one publisher; ``pending_in_spool`` is what is still waiting for the broker."""

    published: int = 0
    delivered: int = 0
    spooled: int = 0
    """Events written while the broker was away (a connection or a delivery had failed, none acked since)."""
    replayed: int = 0
    """Deliveries of events that had waited (this run's, or a previous run's with the same probe id)."""
    send_failures: int = 0
    pending_in_spool: int = 0
    dead_lettered: int = 0
    """Records the broker refused for good, moved to the dead-letter file."""
    refused: int = 0
    """Events ``publish`` refused because the spool was full or unwritable (the probe stops on the first)."""
    unsaved: int = 0
    """Events neither on disk nor acknowledged when ``close`` returned (the spool was unwritable)."""


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    bootstrap: str
    topic: str
    spool_path: Path
    compression: str | None = "gzip"
    delivery_timeout_ms: int = 30_000
    request_timeout_ms: int = 10_000
    max_block_ms: int = 5_000
    retry_interval_s: float = 1.0
    replay_batch: int = 1000
    partitions: int = REQUEST_TIMINGS_PARTITIONS
    """Partitions of the topic if the publisher has to create it."""
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    """Security settings of the client (``Settings.kafka_client_options()``)."""
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    spool_fsync: bool = True
    """fsync every group commit (survives a power cut); ``False``: survives a process crash only, cheaper."""
    group_commit_ms: float = 5.0
    """How long the thread gathers events into one spool transaction (one fsync)."""
    max_in_flight: int = 20_000
    """Rows handed to the producer and not yet acknowledged, at most."""


ProducerFactory = Callable[[PublisherConfig], Any]


def kafka_producer(config: PublisherConfig) -> KafkaProducer:
    """The production producer: acks=all, idempotent, compressed; it first creates the topic if missing.

    Not the broker's auto-create: that would give the topic the broker's default partitions, often one,
    and so only one worker. A broker that cannot be reached raises (the publisher spools and retries); one
    that does not let the probe create topics is only logged, as the topic may exist or be auto-created.
    """
    try:
        ensure_topic(
            config.bootstrap,
            config.topic,
            config.partitions,
            request_timeout_ms=config.request_timeout_ms,
            client_options=config.kafka_options,
        )
    except KafkaError as exc:
        if isinstance(exc, KafkaTimeoutError | KafkaConnectionError):
            raise  # unreachable: the publisher spools and tries again
        log.warning("could not check or create topic %s (%s); sending anyway", config.topic, type(exc).__name__)
    return KafkaProducer(
        bootstrap_servers=config.bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        compression_type=config.compression,
        linger_ms=5,
        delivery_timeout_ms=config.delivery_timeout_ms,
        request_timeout_ms=min(config.request_timeout_ms, config.delivery_timeout_ms - 10),
        max_block_ms=config.max_block_ms,
        bootstrap_timeout_ms=config.request_timeout_ms,  # an absent broker: spool after this, not kafka's 30 s
        client_id="tokenpulse-probe",
        **dict(config.kafka_options),
    )


Outcome = tuple[int, int, BaseException | None]  # (producer generation, seq, error or None)


def close_producer(producer: Any, timeout_s: float) -> None:
    """Close a kafka-python producer even when the broker is away.

    Its ``close(timeout)`` flushes first and raises ``KafkaTimeoutError`` without closing when the flush
    times out. What it still holds is in the spool, so it is dropped and the client closed at once.
    """
    try:
        producer.close(timeout=timeout_s)
    except KafkaTimeoutError:
        producer.flush = lambda timeout=None: None
        producer.close(timeout=0)


class KafkaPublisher:
    """``publish(event)`` from any thread; ``close()`` flushes and leaves anything unacknowledged in the spool."""

    def __init__(self, config: PublisherConfig, producer_factory: ProducerFactory = kafka_producer) -> None:
        self.config = config
        self.spool = Spool(config.spool_path, config.spool_max_bytes, fsync=config.spool_fsync)
        self.stats = PublishStats()
        self._factory = producer_factory
        self._producer: Any = None
        self._queue: queue.SimpleQueue[tuple[bytes, bytes] | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._stats_lock = threading.Lock()
        self._failure: SpoolError | None = None
        self._unwritten: list[tuple[str, bytes | None, bytes]] = []
        self._cursor = 0  # the highest seq handed to the producer since the last (re)start of sending
        self._inflight: collections.OrderedDict[int, SpooledRecord] = collections.OrderedDict()
        self._results: dict[int, bool] = {}  # seq -> acknowledged (True) / failed and to re-send (False)
        self._rewinding = False
        self._generation = 0  # bumped with every new producer: outcomes of an older one are ignored
        self._outage_logged = False
        self._broker_away = False  # a connection or a delivery failed, and nothing was acknowledged since
        # Rows at or below this seq waited for the broker: their deliveries count as replays.
        self._waited_through = self.spool.last_seq()
        if self.spool.has_pending():
            log.info(
                "spool %s holds %d events from an earlier run; replaying them first",
                config.spool_path,
                self.spool.pending_count(),
            )
        self._last_attempt = 0.0
        self._last_write_failure = 0.0
        self._closing_deadline = float("inf")
        self._stopped = False
        self._written = threading.Event()
        self._writer_done = threading.Event()
        self._writer = threading.Thread(target=self._writer_main, name="tokenpulse-spool-writer", daemon=True)
        self._sender = threading.Thread(target=self._run_sender, name="tokenpulse-kafka-sender", daemon=True)
        self._writer.start()
        self._sender.start()

    def _writer_main(self) -> None:
        try:
            self._run_writer()
        finally:
            self._writer_done.set()
            self._written.set()

    @property
    def connected(self) -> bool:
        """Whether a Kafka producer is up (the broker answered once since the last failure)."""
        return self._producer is not None

    # -- the caller's side -------------------------------------------------------------------------------

    def publish(self, event: RequestTiming) -> None:
        """Queue one event; never blocks on the broker.

        Raises ``SpoolFullError`` when the spool holds ``spool_max_bytes`` of undelivered events and
        ``SpoolError`` when the spool cannot be written: the event is then not taken (``stats.refused``).
        """
        key, value = event.kafka_key(), encode(event)
        try:
            if self._failure is not None:
                raise self._failure
            self.spool.reserve(record_size(self.config.topic, key, value))
        except SpoolError:
            self._count("refused")
            raise
        self._count("published")
        self._queue.put((key, value))

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    # -- the publisher thread ----------------------------------------------------------------------------

    def _run_writer(self) -> None:
        """The write-ahead side: queued events into the spool, one transaction per group commit."""
        try:
            while True:
                batch, stop = self._gather()
                if self._write(batch):
                    self._written.set()
                if stop and not self._unwritten:
                    return
                if stop:
                    time.sleep(min(0.2, self.config.retry_interval_s))
                    if self._closing_deadline < time.monotonic():
                        return
        except Exception:
            log.exception("the spool writer failed; published events may be only in memory")
            self._failure = SpoolError(f"the spool writer of {self.config.spool_path} stopped on an internal error")
            raise

    def _run_sender(self) -> None:
        """The Kafka side: connect, send spooled rows in order, apply acknowledgements. Never blocks a write."""
        try:
            while not self._stopped:
                self._settle()
                self._ensure_producer()
                self._send_more()
                if self._writer_done.is_set() and (
                    self._producer is None
                    or not self._inflight_or_unsent()
                    or time.monotonic() > self._closing_deadline
                ):
                    return
                self._written.wait(0.01 if self._inflight else 0.05)
                self._written.clear()
        except Exception:
            if self._stopped:
                return  # close() gave up waiting for us and closed the spool: nothing is lost, rows stay on disk
            log.exception("the Kafka sender failed; events stay in the spool %s", self.config.spool_path)
            raise

    def _inflight_or_unsent(self) -> bool:
        return bool(self._inflight) or bool(self.spool.read_after(self._cursor, 1))

    def _gather(self) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Events queued now, after waiting for the first one a short while; ``True`` once close() asked."""
        try:
            first = self._queue.get(timeout=0.05)
        except queue.Empty:
            return [], self._closing_deadline < float("inf")
        items = [] if first is None else [first]
        stop = first is None
        deadline = time.monotonic() + self.config.group_commit_ms / 1000
        while not stop:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                stop = True
            else:
                items.append(item)
        return items, stop

    def _write(self, batch: list[tuple[bytes, bytes]]) -> bool:
        """Append what waits to the spool; ``True`` if rows were added."""
        self._unwritten.extend((self.config.topic, key, value) for key, value in batch)
        if not self._unwritten:
            return False
        if self._failure is not None and time.monotonic() - self._last_write_failure < self.config.retry_interval_s:
            return False
        try:
            first = self.spool.append(self._unwritten, reserved=True)
        except SpoolError as exc:
            if self._failure is None:
                log.error("%s; %d events wait in memory, the probe stops", exc, len(self._unwritten))
            self._failure = exc
            self._last_write_failure = time.monotonic()
            return False
        if self._failure is not None:
            log.warning("the spool %s is writable again", self.config.spool_path)
            self._failure = None
        last = first + len(self._unwritten) - 1
        if self._broker_away:
            self._count("spooled", len(self._unwritten))
            self._waited_through = last
        self._unwritten.clear()
        return True

    def _ensure_producer(self) -> None:
        if self._producer is not None or time.monotonic() - self._last_attempt < self.config.retry_interval_s:
            return
        self._last_attempt = time.monotonic()
        try:
            producer = self._factory(self.config)
        except Exception as exc:
            self._broker_away = True
            log.warning(
                "Kafka at %s unreachable (%s); events wait in the spool %s",
                self.config.bootstrap,
                type(exc).__name__,
                self.spool.path,
            )
            return
        if self._stopped:
            producer.close(timeout=0)
        else:
            self._producer = producer

    def _send_more(self) -> None:
        if self._producer is None or self._rewinding:
            return
        room = self.config.max_in_flight - len(self._inflight)
        while room > 0:
            records = self.spool.read_after(self._cursor, min(room, self.config.replay_batch))
            if not records:
                return
            for record in records:
                try:
                    future = self._producer.send(record.topic, key=record.key, value=record.value)
                except PERMANENT_SEND_ERRORS as exc:  # e.g. larger than the producer's max_request_size
                    self._dead_letter(record, exc)
                    self._cursor = record.seq
                    continue
                except Exception as exc:
                    log.info("send paused (%s); the spool keeps the events", type(exc).__name__)
                    self._broker_away = True
                    self._count("send_failures")
                    self._last_attempt = time.monotonic()
                    return
                self._inflight[record.seq] = record
                self._cursor = record.seq
                future.add_both(self._on_outcome, self._generation, record.seq)
            room = self.config.max_in_flight - len(self._inflight)

    def _on_outcome(self, generation: int, seq: int, result: Any) -> None:
        # kafka-python calls this from its sender thread: only hand the outcome over.
        self._outcomes.put((generation, seq, result if isinstance(result, BaseException) else None))

    def _dead_letter(self, record: SpooledRecord, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "Kafka refused spool record %d for good (%s); moved to %s", record.seq, reason, self.spool.dead_letter_path
        )
        self.spool.dead_letter(record, reason)
        self._count("dead_lettered")

    def _settle(self) -> None:
        """Apply the producer's outcomes: delete the acknowledged prefix, dead-letter, rewind on failure."""
        while True:
            try:
                generation, seq, exc = self._outcomes.get_nowait()
            except queue.Empty:
                break
            record = self._inflight.get(seq)
            if record is None or generation != self._generation:
                continue  # a producer given up on: its late acks only cost a re-send (deduplicated downstream)
            if exc is None:
                self._outage_logged = self._broker_away = False
                self._results[seq] = True
                self._count("delivered")
                if seq <= self._waited_through:
                    self._count("replayed")
            elif isinstance(exc, PERMANENT_SEND_ERRORS):
                self._dead_letter(record, exc)
                del self._inflight[seq]
            else:
                if not self._outage_logged:
                    self._outage_logged = True
                    log.warning(
                        "delivery to %s failed (%s); events stay in the spool and are sent again",
                        self.config.topic,
                        type(exc).__name__,
                    )
                self._count("send_failures")
                self._broker_away = True
                self._results[seq] = False
                self._rewinding = True
        self._delete_acknowledged_prefix()
        if self._rewinding:
            self._restart_sending()

    def _delete_acknowledged_prefix(self) -> None:
        last, count, nbytes = 0, 0, 0
        while self._inflight:
            seq, record = next(iter(self._inflight.items()))
            if not self._results.get(seq, False):
                break
            self._inflight.popitem(last=False)
            del self._results[seq]
            last, count, nbytes = seq, count + 1, nbytes + record.size
        if count:
            self.spool.delete_through(last, count, nbytes)

    def _restart_sending(self) -> None:
        # A delivery failed (the broker is away past delivery_timeout_ms). kafka-python's idempotent producer
        # does not reliably resume after expired batches, so it is closed (what it still holds is in the
        # spool) and a new one is made on the next attempt; sending starts again from the oldest row not
        # acknowledged. Acknowledged rows are forgotten one by one (they are not a prefix).
        producer, self._producer = self._producer, None
        self._generation += 1
        if producer is not None:
            try:
                close_producer(producer, 0)
            except Exception as exc:
                log.info("closing the failed producer: %s", type(exc).__name__)
        for seq, acked in list(self._results.items()):
            if acked:
                self.spool.delete(self._inflight.pop(seq))
        first = next(iter(self._inflight), None)
        self._waited_through = max(self._waited_through, self._cursor)
        if first is not None:
            self._cursor = first - 1
        self._inflight.clear()
        self._results.clear()
        self._rewinding = False
        self._last_attempt = time.monotonic()

    # -- draining and closing ----------------------------------------------------------------------------

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything published is acknowledged and the spool is empty; ``True`` if that happened."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.empty() and not self._unwritten and not self.spool.has_pending():
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout_s: float = 10.0) -> PublishStats:
        """Flush what the broker will take within ``timeout_s``; the rest stays in the spool for next time."""
        self._closing_deadline = time.monotonic() + timeout_s
        self._queue.put(None)
        self._writer.join(timeout_s + 5)
        self._sender.join(timeout_s + 5)
        producer = self._producer
        if producer is not None:
            for _topic, key, value in self._unwritten:  # the spool could not take them: Kafka is their last chance
                producer.send(self.config.topic, key=key, value=value)
            try:
                producer.flush(timeout=timeout_s)
            except Exception as exc:
                log.warning(
                    "flush on close incomplete (%s); unacknowledged events stay in the spool", type(exc).__name__
                )
            else:
                self._unwritten.clear()
            close_producer(producer, timeout_s)
        if not self._sender.is_alive():
            self._settle()
        if self._unwritten:
            log.error("%d events could not be written to the spool nor sent to Kafka", len(self._unwritten))
        with self._stats_lock:
            self.stats.pending_in_spool = self.spool.pending_count()
            self.stats.unsaved = len(self._unwritten)
        stats = self.stats_snapshot()
        self._stopped = True
        self.spool.close()
        return stats

    def stats_snapshot(self) -> PublishStats:
        """A consistent copy of the counters (safe from any thread)."""
        with self._stats_lock:
            return PublishStats(**{name: getattr(self.stats, name) for name in PublishStats.__slots__})

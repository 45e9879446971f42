"""Publishes ``RequestTiming`` events to Kafka, falling back to the durable spool so nothing is lost.

A kafka-python producer with ``acks=all``, idempotence and compression runs in the publisher's own thread,
so a slow or absent broker never blocks the probe's event loop. An event goes to the spool when the
producer cannot be created, when ``send`` raises, when a send fails after its retries (delivery timeout),
and while older events are still spooled (so replay keeps the order). The spool is replayed in order as
soon as the broker answers again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from tokenpulse.producers.spool import Spool, SpooledRecord
from tokenpulse.schemas import RequestTiming, encode
from tokenpulse.topics import REQUEST_TIMINGS_PARTITIONS, ensure_topic

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublishStats:
    """Counters of one publisher; ``pending_in_spool`` is what is still waiting for the broker."""

    published: int = 0
    delivered: int = 0
    spooled: int = 0
    replayed: int = 0
    send_failures: int = 0
    pending_in_spool: int = 0


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
    replay_batch: int = 500
    partitions: int = REQUEST_TIMINGS_PARTITIONS
    """Partitions of the topic if the publisher has to create it."""
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    """Security settings of the client (``Settings.kafka_client_options()``)."""


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


class KafkaPublisher:
    """``publish(event)`` from any thread; ``close()`` flushes and leaves anything undelivered in the spool."""

    def __init__(self, config: PublisherConfig, producer_factory: ProducerFactory = kafka_producer) -> None:
        self.config = config
        self.spool = Spool(config.spool_path)
        self.stats = PublishStats()
        self._factory = producer_factory
        self._producer: Any = None
        self._queue: queue.SimpleQueue[tuple[bytes, bytes] | None] = queue.SimpleQueue()
        self._stats_lock = threading.Lock()
        self._replay_inflight: list[tuple[SpooledRecord, Any]] = []
        self._last_attempt = 0.0
        self._thread = threading.Thread(target=self._run, name="tokenpulse-publisher", daemon=True)
        self._closing = threading.Event()
        self._thread.start()

    def publish(self, event: RequestTiming) -> None:
        """Queue one event; never blocks on the broker."""
        with self._stats_lock:
            self.stats.published += 1
        self._queue.put((event.kafka_key(), encode(event)))

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.05 if self._replay_inflight else self.config.retry_interval_s / 4)
            except queue.Empty:
                item = None
            if item is None and self._closing.is_set() and self._queue.empty():
                return
            self._ensure_producer()
            if item is not None:
                self._send_or_spool(*item)
            self._progress_replay()

    def _ensure_producer(self) -> None:
        if self._producer is not None or time.monotonic() - self._last_attempt < self.config.retry_interval_s:
            return
        self._last_attempt = time.monotonic()
        try:
            self._producer = self._factory(self.config)
        except Exception as exc:
            log.warning(
                "Kafka at %s unreachable (%s); events go to the spool %s",
                self.config.bootstrap,
                type(exc).__name__,
                self.spool.path,
            )

    def _send_or_spool(self, key: bytes, value: bytes) -> None:
        if self._producer is None or self.spool.has_pending():
            self._to_spool(key, value)
            return
        try:
            future = self._producer.send(self.config.topic, key=key, value=value)
        except Exception as exc:
            log.warning("send to %s failed (%s); spooled", self.config.topic, type(exc).__name__)
            self._count("send_failures")
            self._to_spool(key, value)
            return
        future.add_callback(self._on_delivered)
        future.add_errback(self._on_send_failed, key, value)

    def _on_delivered(self, _metadata: Any) -> None:
        self._count("delivered")

    def _on_send_failed(self, key: bytes, value: bytes, exc: BaseException) -> None:
        log.warning("delivery to %s failed after retries (%s); spooled", self.config.topic, type(exc).__name__)
        self._count("send_failures")
        self._to_spool(key, value)

    def _to_spool(self, key: bytes, value: bytes) -> None:
        self.spool.append(self.config.topic, key, value)
        self._count("spooled")

    def _progress_replay(self) -> None:
        if self._replay_inflight:
            confirmed = None
            while self._replay_inflight and self._replay_inflight[0][1].is_done:
                record, future = self._replay_inflight[0]
                if future.failed():
                    log.info("spool replay not confirmed (%s); retrying later", type(future.exception).__name__)
                    self._replay_inflight.clear()
                    break
                confirmed = record.end_offset
                self._replay_inflight.pop(0)
                self._count("replayed")
                self._count("delivered")
            if confirmed is not None:
                self.spool.commit(confirmed)
            if self._replay_inflight:
                return
        if self._producer is None or not self.spool.has_pending():
            return
        if time.monotonic() - self._last_attempt < self.config.retry_interval_s:
            return
        self._last_attempt = time.monotonic()
        for record in self.spool.read_pending(self.config.replay_batch):
            try:
                future = self._producer.send(record.topic, key=record.key, value=record.value)
            except Exception as exc:
                log.info("spool replay paused: %s", type(exc).__name__)
                break
            self._replay_inflight.append((record, future))

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything queued is delivered and the spool is empty; ``True`` if that happened."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._stats_lock:
                live_delivered = self.stats.delivered - self.stats.replayed
                idle = live_delivered + self.stats.spooled >= self.stats.published
            if self._queue.empty() and idle and not self.spool.has_pending() and not self._replay_inflight:
                return True
            time.sleep(0.05)
        return False

    def close(self, timeout_s: float = 10.0) -> PublishStats:
        """Flush what the broker will take within ``timeout_s``; the rest stays in the spool for next time."""
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout_s + 5)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=timeout_s)
            except Exception as exc:
                log.warning("flush on close incomplete (%s); undelivered events are spooled", type(exc).__name__)
            # close() aborts what is still unsent; their errbacks put those events in the spool.
            self._producer.close(timeout=timeout_s)
        with self._stats_lock:
            self.stats.pending_in_spool = self.spool.pending_count()
        stats = self.stats_snapshot()
        self.spool.close()
        return stats

    def stats_snapshot(self) -> PublishStats:
        """A consistent copy of the counters (safe from any thread)."""
        with self._stats_lock:
            return PublishStats(**{name: getattr(self.stats, name) for name in PublishStats.__slots__})

"""A Kafka topic -> InfluxDB sink: a plain aiokafka consumer reading batches with ``getmany``.

Per batch: decode and validate each record, build one line each (pure), write them with ``InfluxWriter``
(its own retry loop), dead-letter undecodable records and lines InfluxDB rejected, and only then commit the
batch's offsets. An InfluxDB outage therefore pauses consumption without losing anything; a crash before the
commit re-delivers the batch, and idempotent points make that harmless. Decoding batch N+1 overlaps with
writing batch N; commits stay in order because at most one write is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import BaseModel

from tokenpulse.schemas import DeadLetter, SchemaError, decode
from tokenpulse.sinks.writer import InfluxWriter, WriteAborted, WriteResult

log = logging.getLogger(__name__)

EventT = TypeVar("EventT", bound=BaseModel)


@dataclass
class PreparedBatch:
    lines: list[str] = field(default_factory=list)
    sources: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class SinkStats:
    records: int = 0
    written: int = 0
    dead_lettered: int = 0
    batches: int = 0
    write_retries: int = 0


class EventLineCodec(Generic[EventT]):
    """Turns a record's bytes into one line of ``measurement``: ``schemas.decode`` (an invalid record raises
    ``SchemaError``) and then a pure line builder."""

    def __init__(self, model: type[EventT], to_line: Callable[[EventT], str]) -> None:
        self.model = model
        self.to_line = to_line

    def __call__(self, raw: bytes | None) -> str:
        return self.to_line(decode(self.model, raw))


class KafkaInfluxSink:
    """Consumes ``topic`` in group ``group_id`` and writes each record as one point with ``writer``."""

    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        topic: str,
        group_id: str,
        codec: Callable[[bytes | None], str],
        writer: InfluxWriter,
        dlq_topic: str,
        producer: AIOKafkaProducer,
        max_records: int = 10_000,
        poll_timeout_ms: int = 200,
        yield_every: int = 1000,
        auto_offset_reset: str = "earliest",
        max_inflight_writes: int = 2,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.topic = topic
        self.codec = codec
        self.writer = writer
        self.dlq_topic = dlq_topic
        self.producer = producer
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.yield_every = yield_every
        self.max_inflight_writes = max_inflight_writes
        self.stats = SinkStats()
        self._stop_writes = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=max_inflight_writes, thread_name_prefix=f"influx-writer-{name}")
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            # An InfluxDB outage keeps one batch in the retry loop; stay in the group meanwhile.
            max_poll_interval_ms=3_600_000,
            **dict(kafka_options or {}),
        )

    def prepare(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> PreparedBatch:
        """Decode and build lines (pure CPU work); bad records become dead letters."""
        prepared = PreparedBatch()
        for tp, records in batch.items():
            self._prepare_records(prepared, tp, records)
        return prepared

    async def _prepare_yielding(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> PreparedBatch:
        # Same as ``prepare``, giving the event loop a turn every ``yield_every`` records so that the
        # consumer's fetches and the previous batch's commit make progress meanwhile.
        prepared = PreparedBatch()
        step = self.yield_every
        for tp, records in batch.items():
            for start in range(0, len(records), step):
                self._prepare_records(prepared, tp, records[start : start + step])
                await asyncio.sleep(0)
        return prepared

    def _prepare_records(
        self, prepared: PreparedBatch, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        codec, add_line, add_source = self.codec, prepared.lines.append, prepared.sources.append
        for record in records:
            try:
                line = codec(record.value)
            except (SchemaError, ValueError) as exc:
                prepared.dead_letters.append(
                    DeadLetter(record.key, record.value, f"invalid event: {exc}", tp.topic, tp.partition, record.offset)
                )
            else:
                add_line(line)
                add_source(record)
        if records:
            prepared.offsets[tp] = records[-1].offset + 1

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the last acknowledged batch is committed before returning."""
        await self._consumer.start()
        loop = asyncio.get_running_loop()
        # Up to ``max_inflight_writes`` batches are written at once (InfluxDB parses one while the next
        # arrives); each batch commits only after its own write and every earlier batch's commit, so the
        # committed offset never passes an unacknowledged record.
        inflight: deque[asyncio.Task[None]] = deque()
        fetch = asyncio.create_task(self._fetch())
        try:
            while not stop.is_set():
                batch = await fetch
                # The next batch is fetched while this one is prepared (one batch ahead, so memory stays
                # bounded during an InfluxDB outage): otherwise each drained fetch buffer costs a round trip.
                fetch = asyncio.create_task(self._fetch())
                if not batch:
                    continue
                prepared = await self._prepare_yielding(batch)
                while len(inflight) >= self.max_inflight_writes:
                    await inflight.popleft()
                # Hand the write to a writer thread right now. A task would start only at the loop's next
                # yield, and a getmany that finds buffered records does not yield, so preparing the next
                # batch and writing this one would never overlap.
                written = loop.run_in_executor(self._executor, self.writer.write, prepared.lines, self._stop_writes)
                previous = inflight[-1] if inflight else None
                inflight.append(asyncio.create_task(self._commit_when_written(prepared, written, previous)))
            while inflight:
                await inflight.popleft()
        except WriteAborted as exc:
            log.warning("sink %s stopped before InfluxDB acknowledged a batch (it will be re-read): %s", self.name, exc)
        finally:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await fetch
            if any(not task.done() for task in inflight):
                self.request_stop()
            for task in inflight:
                with contextlib.suppress(WriteAborted):
                    await task
            await self._consumer.stop()
            self._executor.shutdown(wait=False)

    async def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await self._consumer.getmany(
            timeout_ms=self.poll_timeout_ms, max_records=self.max_records
        )
        return batch

    def request_stop(self) -> None:
        """Abandon a write that is waiting out an outage (its batch stays uncommitted)."""
        self._stop_writes.set()

    async def _commit_when_written(
        self, prepared: PreparedBatch, written: asyncio.Future[WriteResult], previous: asyncio.Task[None] | None
    ) -> None:
        result = await written
        if previous is not None:
            await previous  # commits stay in batch order
        dead = list(prepared.dead_letters)
        for rejected in result.rejected:
            record = prepared.sources[rejected.index]
            dead.append(
                DeadLetter(
                    record.key,
                    record.value,
                    f"InfluxDB rejected the point: {rejected.error}",
                    record.topic,
                    record.partition,
                    record.offset,
                    rejected.line,
                )
            )
        if dead:
            await self._dead_letter(dead)
        try:
            await self._consumer.commit(prepared.offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Written but not committed: the batch is re-read after the rebalance and overwrites itself.
            log.warning("sink %s could not commit offsets (%s); the batch will be re-written", self.name, exc)
        self.stats.records += len(prepared.lines) + len(prepared.dead_letters)
        self.stats.written += result.written
        self.stats.dead_lettered += len(dead)
        self.stats.write_retries += result.retries
        self.stats.batches += 1

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        for letter in dead:
            log.error(
                "sink %s dead-lettered %s[%d]@%d to %s: %s",
                self.name,
                letter.source_topic,
                letter.partition,
                letter.offset,
                self.dlq_topic,
                letter.error,
            )
        futures = [
            await self.producer.send(self.dlq_topic, value=d.value, key=d.key, headers=d.headers()) for d in dead
        ]
        await asyncio.gather(*futures)

"""The alert engine's I/O shell: WindowStats from Kafka -> ``RuleEngine`` -> Alert events and rule state.

Per batch of windows: each alert is published to the alerts topic (key
``rule/provider/model/workload/region/window``), the state of every rule key the batch changed to the
compacted alert-state topic (same key), and only once Kafka acknowledged both are the window offsets
committed. At start-up ``restore`` reads the alert-state topic back, so a restarted sink knows which alerts
fire (with their ids), the streaks, cooldowns and baselines. A crash between the publish and the commit
re-reads windows the restored state has already judged (skipped), or, if the state record was lost with
them, judges them again and publishes the same alert with the same id (ids are derived from the key and the
window). Notifiers read the alerts topic themselves (``sinks.delivery``). Records that are not valid
``WindowStats`` go to the dead-letter topic with an ``error`` header. The rule logic lives in
``sinks.rules`` and has no I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from tokenpulse.schemas import Alert, SchemaError, WindowStats, decode, encode
from tokenpulse.sinks.rules import RuleEngine, StateKey, state_key_text

log = logging.getLogger(__name__)


class AlertEngine:
    """Runs ``RuleEngine`` over the window-stats topic; ``alerts`` keeps every alert it emitted.

    Plain counters for health metrics: ``windows_seen``, ``alerts_published`` (per state) and ``dead_lettered``.
    """

    def __init__(
        self,
        *,
        rules: RuleEngine,
        bootstrap: str,
        window_topic: str,
        alerts_topic: str,
        state_topic: str,
        dlq_topic: str,
        group_id: str,
        producer: AIOKafkaProducer,
        time_ns: Callable[[], int] = time.time_ns,
        idle_check_s: float = 5.0,
        auto_offset_reset: str = "earliest",
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.rules = rules
        self.bootstrap = bootstrap
        self.alerts_topic = alerts_topic
        self.state_topic = state_topic
        self.dlq_topic = dlq_topic
        self.producer = producer
        self.time_ns = time_ns
        self.idle_check_s = idle_check_s
        self.kafka_options = dict(kafka_options or {})
        self.alerts: list[Alert] = []
        self.windows_seen = 0
        self.alerts_published: Counter[str] = Counter()
        self.dead_lettered = 0
        self.states_restored = 0
        self._consumer = AIOKafkaConsumer(
            window_topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            **self.kafka_options,
        )

    async def restore(self, partitions: int) -> int:
        """Read the alert-state topic (``partitions`` of them) from its start to its end and put every key's
        state back; returns how many keys were restored. Call once, before ``run``."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None, **self.kafka_options
        )
        await reader.start()
        await asyncio.sleep(0)  # let its internal task start, or stopping it raises (see _stop_groupless)
        latest: dict[bytes, bytes | None] = {}
        try:
            # (An unsubscribed consumer knows no partitions_for_topic: the count comes from ensure_topics.)
            assigned = [TopicPartition(self.state_topic, p) for p in range(partitions)]
            if assigned:
                reader.assign(assigned)
                await reader.seek_to_beginning(*assigned)
                end = await reader.end_offsets(assigned)
                remaining = {tp for tp in assigned if end[tp] > 0}
                while remaining:
                    batch = await reader.getmany(*remaining, timeout_ms=500)
                    for tp, records in batch.items():
                        for record in records:
                            if record.key is not None:
                                latest[record.key] = record.value
                        if records and records[-1].offset + 1 >= end[tp]:
                            remaining.discard(tp)
        finally:
            await _stop_groupless(reader)
        for raw in latest.values():
            if raw is None:
                continue
            document = json.loads(raw)
            key: StateKey = tuple(document["key"])  # type: ignore[assignment]
            self.rules.restore_state(key, document["state"])
            self.states_restored += 1
        firing = len(self.rules.firing())
        log.info(
            "alert engine restored %d rule states from %s (%d firing)", self.states_restored, self.state_topic, firing
        )
        return self.states_restored

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        loop = asyncio.get_running_loop()
        next_idle_check = loop.time() + self.idle_check_s
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
                alerts: list[Alert] = []
                for tp, records in batch.items():
                    for record in records:
                        try:
                            stats = _decode_window(record.value)
                        except SchemaError as exc:
                            await self._dead_letter(record.key, record.value, str(exc), tp.topic)
                            continue
                        self.windows_seen += 1
                        alerts.extend(self.rules.observe(stats))
                if loop.time() >= next_idle_check:
                    alerts.extend(self.rules.check_idle(self.time_ns()))
                    next_idle_check = loop.time() + self.idle_check_s
                await self._publish(alerts)
                if batch or alerts:
                    await self._persist_states()
                if batch:
                    offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
                    try:
                        await self._consumer.commit(offsets)
                    except (CommitFailedError, KafkaError) as exc:
                        log.warning("alert engine could not commit window offsets (%s); windows are re-read", exc)
        finally:
            await self._consumer.stop()

    async def _publish(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        futures = [await self.producer.send(self.alerts_topic, value=encode(a), key=a.kafka_key()) for a in alerts]
        await asyncio.gather(*futures)
        for alert in alerts:
            log.info("alert %s %s (%s): %s", alert.state, alert.rule, alert.alert_id, alert.message)
            self.alerts.append(alert)
            self.alerts_published[alert.state] += 1

    async def _persist_states(self) -> None:
        changed = self.rules.take_changed_states()
        if not changed:
            return
        futures = [
            await self.producer.send(
                self.state_topic,
                value=json.dumps({"key": list(key), "state": state}, separators=(",", ":")).encode(),
                key=state_key_text(key).encode(),
            )
            for key, state in changed.items()
        ]
        await asyncio.gather(*futures)

    async def _dead_letter(self, key: bytes | None, value: bytes | None, error: str, topic: str) -> None:
        log.error("alert engine dead-lettered a record of %s: %s", topic, error)
        headers = [("error", error.encode()[:4000]), ("source-topic", topic.encode())]
        await self.producer.send_and_wait(self.dlq_topic, value=value, key=key, headers=headers)
        self.dead_lettered += 1


def _decode_window(raw: bytes | None) -> WindowStats:
    if raw is None:
        raise SchemaError("record has no value (tombstone)")
    return decode(WindowStats, raw)


async def _stop_groupless(consumer: AIOKafkaConsumer) -> None:
    # aiokafka 0.14: stopping a group-less consumer whose internal committed-offsets task has not run yet
    # raises that task's CancelledError (and leaves the consumer's other tasks pending). Only a
    # cancellation of *this* task is passed on.
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise

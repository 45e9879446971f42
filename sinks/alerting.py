"""The alert engine's I/O shell: WindowStats from Kafka -> ``RuleEngine`` -> Alert events.

Each alert is published to the alerts topic (key ``rule/provider/model/workload``) and handed to
``on_alert`` (the notifier dispatcher, which never blocks). Window offsets are committed only after the
alerts of their batch were acknowledged by Kafka. Records that are not valid ``WindowStats`` go to the
dead-letter topic with an ``error`` header. The rule logic itself lives in ``streams.rules`` and has no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError

from tokenpulse.schemas import Alert, SchemaError, WindowStats, decode, encode
from tokenpulse.sinks.rules import RuleEngine

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
        dlq_topic: str,
        group_id: str,
        producer: AIOKafkaProducer,
        on_alert: Callable[[Alert], None] | None = None,
        time_ns: Callable[[], int] = time.time_ns,
        idle_check_s: float = 5.0,
        auto_offset_reset: str = "earliest",
    ) -> None:
        self.rules = rules
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic
        self.producer = producer
        self.on_alert = on_alert
        self.time_ns = time_ns
        self.idle_check_s = idle_check_s
        self.alerts: list[Alert] = []
        self.windows_seen = 0
        self.alerts_published: Counter[str] = Counter()
        self.dead_lettered = 0
        self._consumer = AIOKafkaConsumer(
            window_topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
        )

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
            log.info("alert %s %s: %s", alert.state, alert.rule, alert.message)
            self.alerts.append(alert)
            self.alerts_published[alert.state] += 1
            if self.on_alert is not None:
                self.on_alert(alert)

    async def _dead_letter(self, key: bytes | None, value: bytes | None, error: str, topic: str) -> None:
        log.error("alert engine dead-lettered a record of %s: %s", topic, error)
        headers = [("error", error.encode()[:4000]), ("source-topic", topic.encode())]
        await self.producer.send_and_wait(self.dlq_topic, value=value, key=key, headers=headers)
        self.dead_lettered += 1


def _decode_window(raw: bytes | None) -> WindowStats:
    if raw is None:
        raise SchemaError("record has no value (tombstone)")
    return decode(WindowStats, raw)

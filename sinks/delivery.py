"""At-least-once alert delivery: the alerts topic -> one notifier, committing only after delivery.

Each notifier has its own consumer group (``<prefix>.notify.<notifier name>``) on the alerts topic, so a
receiver that is down for hours holds back only its own alerts, never another receiver's or the pipeline.
Records are delivered one at a time in topic order; a record's offset is committed only after the notifier
accepted the alert (2xx), refused it (a 4xx other than 408/429) or its retries ran out (``DeliveryPolicy``,
hours by default). A refusal or an exhausted budget is recorded: logged as an error, counted in
``NotifierStats.dropped`` and written to the sink dead-letter topic with the reason in its ``error`` header.
A sink killed in between re-delivers the alert after its restart (at least once); within one process a
repeated ``(alert_id, state)`` on the topic (an alert re-published after a crash) is delivered once. An
alert published longer ago than the retry budget (a sink that was down for longer, or a notifier added
later, whose new group starts at the topic's beginning) is recorded as given up, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from tokenpulse.schemas import Alert, SchemaError, decode
from tokenpulse.sinks.notifiers import DeliveryFailed, DeliveryPolicy, Notifier, NotifierStats, send_alert

log = logging.getLogger(__name__)

_REMEMBERED = 10_000


class AlertDelivery:
    """Consumes the alerts topic in its own group and delivers each alert to ``notifier``."""

    def __init__(
        self,
        *,
        notifier: Notifier,
        bootstrap: str,
        alerts_topic: str,
        dlq_topic: str,
        group_id: str,
        producer: AIOKafkaProducer,
        client: httpx.AsyncClient,
        policy: DeliveryPolicy | None = None,
        kafka_options: Mapping[str, Any] | None = None,
        auto_offset_reset: str = "earliest",
    ) -> None:
        self.notifier = notifier
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic
        self.producer = producer
        self.client = client
        self.policy = policy or DeliveryPolicy()
        self.stats = NotifierStats()
        self.delivered: list[Alert] = []
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._consumer = AIOKafkaConsumer(
            alerts_topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            # One alert may be retried for hours without a poll in between: stay in the group meanwhile.
            max_poll_interval_ms=int((self.policy.retry_for_s + 600) * 1000),
            **dict(kafka_options or {}),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; an alert still being retried then stays uncommitted."""
        await self._consumer.start()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=100)
                for tp, records in batch.items():
                    for record in records:
                        work = asyncio.create_task(
                            self._handle(record.key, record.value, tp, record.offset, record.timestamp)
                        )
                        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
                        if not work.done():
                            work.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await work
                            return
                        work.result()
                        await self._commit(tp, record.offset + 1)
        finally:
            stopping.cancel()
            await self._consumer.stop()

    async def _handle(
        self, key: bytes | None, value: bytes | None, tp: TopicPartition, offset: int, timestamp_ms: int
    ) -> None:
        try:
            if value is None:
                raise SchemaError("record has no value (tombstone)")
            alert = decode(Alert, value)
        except SchemaError as exc:
            # The llm_alert sink dead-letters invalid alerts already; here it is only skipped.
            log.error("notifier %s skipped an invalid alert at %s[%d]@%d: %s", self.notifier.name, *tp, offset, exc)
            return
        seen = (alert.alert_id, alert.state)
        if seen in self._seen:
            return
        try:
            age_s = time.time() - timestamp_ms / 1000
            if age_s > self.policy.retry_for_s:
                # Its retry budget ran out while no sink ran (or this notifier's group is new): do not page
                # with a stale alert; record it like any other give-up.
                raise DeliveryFailed(
                    f"published {age_s:.0f}s ago, beyond the {self.policy.retry_for_s:g}s retry budget"
                )
            await send_alert(self.client, self.notifier, alert, self.policy, self.stats)
        except DeliveryFailed as exc:
            self.stats.dropped += 1
            reason = f"notifier {self.notifier.name} ({self.notifier.host}) gave up on alert {alert.alert_id}: {exc}"
            log.error("%s; recorded in %s", reason, self.dlq_topic)
            headers = [("error", reason.encode()[:4000]), ("source-topic", tp.topic.encode())]
            await self.producer.send_and_wait(self.dlq_topic, value=value, key=key, headers=headers)
        else:
            log.info(
                "notifier %s delivered %s alert %s (%s)", self.notifier.name, alert.state, alert.alert_id, alert.rule
            )
            self.delivered.append(alert)
        self._seen[seen] = None
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except (CommitFailedError, KafkaError) as exc:
            log.warning(
                "notifier %s could not commit its offset (%s); the alert may be delivered again",
                self.notifier.name,
                exc,
            )

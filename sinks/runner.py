"""Runs the three InfluxDB sinks, the alert engine and one alert delivery per notifier in one asyncio loop.

Alertmanager notifiers also get every alert that is still firing (from the restored rule state) re-sent
every ``resend_interval_s``, so Alertmanager never resolves a live alert by itself.

``SinkRunner(settings, rules, notifiers).start()`` runs everything in a background thread (the demo and
tests use this); ``stop()`` finishes the in-flight batches and commits them. ``run_sinks(settings, rules,
stop_event)`` does the same in the calling thread until ``stop_event`` is set (the CLI uses this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import urllib3
from aiokafka import AIOKafkaProducer
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException

from tokenpulse.config import Settings
from tokenpulse.errors import TokenpulseError
from tokenpulse.metrics import MetricsEndpoint, serve_metrics
from tokenpulse.schemas import Alert, RequestTiming, WindowStats
from tokenpulse.sinks.alerting import AlertEngine
from tokenpulse.sinks.baseline import seed_from_influx
from tokenpulse.sinks.consumer import EventLineCodec, KafkaInfluxSink
from tokenpulse.sinks.delivery import AlertDelivery
from tokenpulse.sinks.lineprotocol import alert_line, request_line, window_line
from tokenpulse.sinks.metrics import sink_runner_collectors
from tokenpulse.sinks.notifiers import AlertmanagerNotifier, DeliveryPolicy, Notifier, NotifierStats, post_once
from tokenpulse.sinks.rules import RuleEngine, RuleSet
from tokenpulse.sinks.writer import InfluxWriter
from tokenpulse.topics import REQUEST_TIMINGS_PARTITIONS, ensure_topics

log = logging.getLogger(__name__)

ALL_SINKS = ("llm_request", "llm_window", "llm_alert")


SINK_TOPIC_PARTITIONS = 3
"""Partitions of the window-stats, alerts and dead-letter topics if the sink runner has to create them."""


class SinkUnhealthy(TokenpulseError):
    """InfluxDB kept refusing the sink's token or bucket for longer than it is allowed to wait."""


@dataclass
class SinkRunner:
    """The sink process: ``llm_request``, ``llm_window`` and ``llm_alert`` sinks plus alerting."""

    settings: Settings
    rules: RuleSet | None = None
    notifiers: Sequence[Notifier] = ()
    sinks: Sequence[str] = ALL_SINKS
    group_prefix: str | None = None
    max_records: int = 10_000
    stop_grace_s: float = 10.0
    seed_baselines: bool = True
    restore_state: bool = True
    delivery_policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    influx_auth_exit_after_s: float = 300.0
    """How long InfluxDB may refuse the token or bucket (401/403/404) before the sink gives up and exits."""
    health_check_s: float = 1.0
    writers: dict[str, InfluxWriter] = field(default_factory=dict, init=False)
    baseline_values_seeded: int = field(default=0, init=False)
    kafka_sinks: list[KafkaInfluxSink] = field(default_factory=list, init=False)
    alert_engine: AlertEngine | None = field(default=None, init=False)
    deliveries: list[AlertDelivery] = field(default_factory=list, init=False)
    resent: int = field(default=0, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _stop: asyncio.Event | None = field(default=None, init=False)
    _ready: threading.Event = field(default_factory=threading.Event, init=False)
    _error: BaseException | None = field(default=None, init=False)
    _unhealthy: SinkUnhealthy | None = field(default=None, init=False)

    def _group(self, name: str) -> str:
        return f"{self.group_prefix or self.settings.topic_prefix}.{name}"

    def influx_problems(self) -> dict[str, str]:
        """Sink name -> what InfluxDB refuses (wrong token or bucket) and the fix; empty while healthy."""
        return {name: w.auth_problem for name, w in list(self.writers.items()) if w.auth_problem is not None}

    def notifier_stats(self) -> dict[str, NotifierStats]:
        """Delivery counters per notifier name."""
        return {d.notifier.name: d.stats for d in list(self.deliveries)}

    async def run(self, stop: asyncio.Event) -> None:
        s, topics = self.settings, self.settings.topics
        kafka_options = s.kafka_client_options()
        partitions = {topics.request_timings: REQUEST_TIMINGS_PARTITIONS} | {
            topic: SINK_TOPIC_PARTITIONS
            for topic in (topics.window_stats, topics.alerts, topics.alert_state, topics.sink_dlq)
        }
        found_partitions = await asyncio.to_thread(
            ensure_topics,
            s.kafka_bootstrap,
            partitions,
            configs={topics.alert_state: {"cleanup.policy": "compact"}},
            client_options=kafka_options,
        )
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5, **kafka_options)
        await producer.start()
        http = httpx.AsyncClient(timeout=self.delivery_policy.timeout_s)
        writers: list[InfluxWriter] = []
        codecs: dict[str, tuple[str, Callable[[bytes | None], str]]] = {
            "llm_request": (topics.request_timings, EventLineCodec(RequestTiming, request_line)),
            "llm_window": (topics.window_stats, EventLineCodec(WindowStats, window_line)),
            "llm_alert": (topics.alerts, EventLineCodec(Alert, alert_line)),
        }
        try:
            for name in self.sinks:
                topic, codec = codecs[name]
                writer = InfluxWriter(s.influx_url, s.influx_token, s.influx_org, s.influx_bucket)
                writers.append(writer)
                self.writers[name] = writer
                sink = KafkaInfluxSink(
                    name=name,
                    bootstrap=s.kafka_bootstrap,
                    topic=topic,
                    group_id=self._group(f"sink.{name}"),
                    codec=codec,
                    writer=writer,
                    dlq_topic=topics.sink_dlq,
                    producer=producer,
                    max_records=self.max_records,
                    kafka_options=kafka_options,
                )
                self.kafka_sinks.append(sink)
            if self.rules is not None:
                rule_engine = RuleEngine(self.rules)
                self.alert_engine = AlertEngine(
                    rules=rule_engine,
                    bootstrap=s.kafka_bootstrap,
                    window_topic=topics.window_stats,
                    alerts_topic=topics.alerts,
                    state_topic=topics.alert_state,
                    dlq_topic=topics.sink_dlq,
                    group_id=self._group("alerting"),
                    producer=producer,
                    kafka_options=kafka_options,
                )
                if self.restore_state:
                    await self.alert_engine.restore(found_partitions[topics.alert_state])
                if self.seed_baselines:
                    self.baseline_values_seeded = await asyncio.to_thread(self._seed, rule_engine)
                for notifier in self.notifiers:
                    delivery = AlertDelivery(
                        notifier=notifier,
                        bootstrap=s.kafka_bootstrap,
                        alerts_topic=topics.alerts,
                        dlq_topic=topics.sink_dlq,
                        group_id=self._group(f"notify.{notifier.name}"),
                        producer=producer,
                        client=http,
                        policy=self.delivery_policy,
                        kafka_options=kafka_options,
                    )
                    self.deliveries.append(delivery)
            tasks = [asyncio.create_task(sink.run(stop), name=f"sink-{sink.name}") for sink in self.kafka_sinks]
            if self.alert_engine is not None:
                tasks.append(asyncio.create_task(self.alert_engine.run(stop), name="alert-engine"))
            for delivery in self.deliveries:
                tasks.append(asyncio.create_task(delivery.run(stop), name=f"notify-{delivery.notifier.name}"))
                if isinstance(delivery.notifier, AlertmanagerNotifier):
                    tasks.append(asyncio.create_task(self._resend(delivery.notifier, http, stop)))
            self._ready.set()
            watchdog = asyncio.create_task(self._abort_after_grace(stop))
            health = asyncio.create_task(self._watch_influx_auth(stop))
            try:
                await asyncio.gather(*tasks)
            finally:
                watchdog.cancel()
                health.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await http.aclose()
            await producer.stop()
            for writer in writers:
                writer.close()

    async def _watch_influx_auth(self, stop: asyncio.Event) -> None:
        """Report a refused token or bucket at once (log, ``/metrics``), and stop the sink with
        ``SinkUnhealthy`` once it has lasted ``influx_auth_exit_after_s``: retrying cannot fix it."""
        reported: set[str] = set()
        while not stop.is_set():
            await asyncio.sleep(self.health_check_s)
            for name, writer in list(self.writers.items()):
                problem, since = writer.auth_problem, writer.auth_failing_since
                if problem is None or since is None:
                    if name in reported:
                        log.info("sink %s is healthy again: InfluxDB accepts its writes", name)
                    reported.discard(name)
                    continue
                if name not in reported:
                    reported.add(name)
                    log.error(
                        "sink %s unhealthy: %s; it exits if this lasts %.0fs",
                        name,
                        problem,
                        self.influx_auth_exit_after_s,
                    )
                if time.monotonic() - since >= self.influx_auth_exit_after_s:
                    self._unhealthy = SinkUnhealthy(
                        f"sink {name} gave up after {self.influx_auth_exit_after_s:.0f}s: {problem}"
                    )
                    log.error("%s", self._unhealthy)
                    stop.set()
                    for sink in self.kafka_sinks:
                        sink.request_stop()
                    return

    async def _resend(self, notifier: AlertmanagerNotifier, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Re-post every alert the rule state says is firing, each ``resend_interval_s``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), notifier.resend_interval_s)
            if stop.is_set() or self.alert_engine is None:
                return
            for alert in self.alert_engine.rules.firing_alerts():
                if await post_once(http, notifier, alert):
                    self.resent += 1

    def _seed(self, engine: RuleEngine) -> int:
        s = self.settings
        try:
            with InfluxDBClient(url=s.influx_url, token=s.influx_token.get_secret_value(), org=s.influx_org) as client:
                return seed_from_influx(engine, client, s.influx_bucket)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # Alerting must not wait for InfluxDB: the baselines then fill from the stream as before.
            log.warning(
                "could not read regression baselines from InfluxDB bucket %r at %s (%s); regression rules "
                "start with empty baselines",
                s.influx_bucket,
                s.influx_url,
                exc,
            )
            return 0

    async def _abort_after_grace(self, stop: asyncio.Event) -> None:
        # A write stuck in an InfluxDB outage is abandoned (left uncommitted) after the grace period.
        await stop.wait()
        await asyncio.sleep(self.stop_grace_s)
        for sink in self.kafka_sinks:
            sink.request_stop()

    def start(self, timeout_s: float = 60.0) -> None:
        """Run in a background thread; returns once every consumer has been created."""
        self._thread = threading.Thread(target=self._thread_main, name="tokenpulse-sinks", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) and self._error is None:
            raise TimeoutError(f"sinks did not start within {timeout_s}s")
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        try:
            loop.run_until_complete(self.run(self._stop))
            if self._unhealthy is not None:
                raise self._unhealthy
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if not isinstance(exc, TokenpulseError):  # a user's error is raised to the caller, not a bug
                log.exception("sink runner failed")
        finally:
            loop.close()

    def stop(self, timeout_s: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._error is not None:
            raise self._error


def run_sinks(
    settings: Settings,
    rules: RuleSet | None,
    stop_event: threading.Event,
    notifiers: Sequence[Notifier] = (),
    *,
    metrics: MetricsEndpoint | None = None,
    delivery_policy: DeliveryPolicy | None = None,
    influx_auth_exit_after_s: float = 300.0,
) -> None:
    """Run the sinks and alerting in this thread until ``stop_event`` is set; with ``metrics`` enabled,
    serve their counters at ``/metrics`` meanwhile."""
    runner = SinkRunner(
        settings,
        rules,
        notifiers,
        delivery_policy=delivery_policy or DeliveryPolicy(),
        influx_auth_exit_after_s=influx_auth_exit_after_s,
    )
    server = serve_metrics(metrics, sink_runner_collectors(runner)) if metrics is not None else None
    try:
        runner.start()
        try:
            while not stop_event.wait(0.5):
                if runner._thread is not None and not runner._thread.is_alive():
                    break
        finally:
            runner.stop()
    finally:
        if server is not None:
            server.close()

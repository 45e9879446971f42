"""Prometheus ``/metrics`` for the long-running commands (``worker``, ``sink``, ``probe``).

Nothing is counted for the metrics' sake: each collector reads, at scrape time, the plain counters the
components keep anyway (``WorkerCounters``, ``PartitionCounters``, ``SinkStats``, ``NotifierStats``,
``PublishStats``, ``EndpointSummary``), so the hot paths pay nothing. With ``--metrics-port 0`` (the
default) no server is started at all.

Scrapes are answered by prometheus_client's HTTP server thread while the components run on an event loop
of their own. The collectors therefore only read int attributes and copy containers with one C-level call
(``list(d.items())``, ``dict(counter)``), which the GIL keeps whole. The worker's open windows and panes
need a walk over its pane dicts, which its event loop changes: that snapshot is taken on the worker's loop
(``call_on_loop``); if the loop does not get to it within the timeout the scrape fails, which Prometheus
reports as ``up == 0`` for the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from wsgiref.simple_server import WSGIServer

import typer
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tokenpulse.errors import TokenpulseError

if TYPE_CHECKING:
    from tokenpulse.producers.probe import ProbeSummary
    from tokenpulse.producers.publisher import KafkaPublisher
    from tokenpulse.sinks.alerting import AlertEngine
    from tokenpulse.sinks.consumer import SinkStats
    from tokenpulse.sinks.notifiers import NotifierStats
    from tokenpulse.sinks.runner import SinkRunner
    from tokenpulse.streams.app import WindowProcessor, WorkerCounters
    from tokenpulse.streams.engine import PartitionCounters

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_METRICS_HOST = "127.0.0.1"
MetricsPortOpt = Annotated[
    int, typer.Option("--metrics-port", min=0, max=65535, help="serve Prometheus /metrics on this port (0: off)")
]
MetricsHostOpt = Annotated[str, typer.Option("--metrics-host", help="address the /metrics server listens on")]

__all__ = [
    "DEFAULT_METRICS_HOST",
    "AlertingCollector",
    "MetricsEndpoint",
    "MetricsHostOpt",
    "MetricsPortOpt",
    "MetricsServer",
    "NotifierCollector",
    "ProbeCollector",
    "PublisherCollector",
    "SinkCollector",
    "WorkerCollector",
    "WorkerSnapshot",
    "call_on_loop",
    "serve_metrics",
    "sink_runner_collectors",
    "worker_snapshot",
]


# ---- the server ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricsEndpoint:
    """Where ``/metrics`` is served (``--metrics-host``, ``--metrics-port``); port 0 means no server."""

    port: int = 0
    host: str = DEFAULT_METRICS_HOST

    @property
    def enabled(self) -> bool:
        return self.port > 0


@dataclass
class MetricsServer:
    """A running ``/metrics`` server (prometheus_client's WSGI server in a daemon thread)."""

    registry: CollectorRegistry
    endpoint: MetricsEndpoint
    httpd: WSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.endpoint.host}:{self.endpoint.port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5.0)


def process_registry() -> CollectorRegistry:
    """A fresh registry with prometheus_client's process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve_metrics(
    endpoint: MetricsEndpoint, collectors: Iterable[Collector], *, registry: CollectorRegistry | None = None
) -> MetricsServer | None:
    """Register ``collectors`` and serve them at ``http://host:port/metrics``; ``None`` when the port is 0.

    An address that cannot be bound (port in use, unknown host) is a ``TokenpulseError`` naming the fix.
    """
    if not endpoint.enabled:
        return None
    registry = registry if registry is not None else process_registry()
    for collector in collectors:
        registry.register(collector)
    try:
        httpd, thread = start_http_server(endpoint.port, endpoint.host, registry)
    except OSError as exc:
        raise TokenpulseError(
            f"--metrics-port {endpoint.port}: cannot listen on {endpoint.host}:{endpoint.port} "
            f"({exc.strerror or exc}); choose a free port, or 0 to turn /metrics off"
        ) from None
    server = MetricsServer(registry, endpoint, httpd, thread)
    log.info("Prometheus metrics at %s", server.url)
    return server


def call_on_loop(loop: asyncio.AbstractEventLoop | None, read: Callable[[], T], timeout_s: float) -> T:
    """``read()`` on ``loop``'s thread and its result here; called directly when the loop is not running
    (or is this thread's own). Raises ``TimeoutError`` if the loop does not run it within ``timeout_s``."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop or not loop.is_running():
        return read()
    result: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not result.set_running_or_notify_cancel():
            return
        try:
            result.set_result(read())
        except BaseException as exc:
            result.set_exception(exc)

    loop.call_soon_threadsafe(run)
    try:
        return result.result(timeout_s)
    except concurrent.futures.TimeoutError:
        result.cancel()
        raise TimeoutError(f"the event loop did not answer a metrics scrape within {timeout_s}s") from None


# ---- helpers ---------------------------------------------------------------------------------------------
def _counter(name: str, documentation: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=list(labels))


def _counters_by_name(
    component: str, families: Iterable[tuple[str, str, str]], stats: Mapping[str, Any]
) -> list[CounterMetricFamily]:
    """``tokenpulse_<component>_<what>_total{<component>=name}`` for each (what, attribute, help) in
    ``families``, with one sample per named stats object (``SinkStats``, ``NotifierStats``)."""
    found = []
    for what, attribute, documentation in families:
        family = _counter(
            f"tokenpulse_{component}_{what}_total", f"{component.capitalize()}: {documentation}.", [component]
        )
        for name, named_stats in sorted(stats.items()):
            family.add_metric([name], getattr(named_stats, attribute))
        found.append(family)
    return found


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


# ---- worker ----------------------------------------------------------------------------------------------
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
    ]
    metrics: list[Metric] = []
    for what, documentation, value in totals:
        family = _counter(f"tokenpulse_worker_{what}_total", f"Worker: {documentation}.")
        family.add_metric([], value)
        metrics.append(family)
    outcomes = _counter(
        "tokenpulse_worker_partition_events_total",
        "Worker: events applied to a partition's windows, by outcome (accepted, duplicate, replayed, late); "
        "restarts from zero when the partition moves to this worker.",
        ["partition", "outcome"],
    )
    open_windows = _gauge("tokenpulse_worker_open_windows", "Worker: windows not yet closed.", ["partition"])
    open_panes = _gauge("tokenpulse_worker_open_panes", "Worker: panes held in memory.", ["partition"])
    event_time = _gauge(
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
    pending = _gauge("tokenpulse_worker_pending_events", "Worker: events applied but not yet acked (next flush).")
    pending.add_metric([], snapshot.pending)
    metrics += [outcomes, open_windows, open_panes, event_time, pending]
    return metrics


# ---- sinks, alerting, notifiers --------------------------------------------------------------------------
class SinkCollector(Collector):
    """``tokenpulse_sink_*{sink}``: the ``SinkStats`` of every Kafka -> InfluxDB sink (read at scrape time)."""

    def __init__(self, stats: Callable[[], Mapping[str, SinkStats]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        families = [  # (metric, SinkStats attribute, help)
            ("records", "records", "records handled (written or dead-lettered)"),
            ("points_written", "written", "points InfluxDB acknowledged"),
            ("dead_letters", "dead_lettered", "records sent to the sink dead-letter topic"),
            ("batches", "batches", "batches written and committed"),
            ("write_retries", "write_retries", "InfluxDB write attempts retried"),
        ]
        return iter(_counters_by_name("sink", families, self.stats()))


class AlertingCollector(Collector):
    """``tokenpulse_alerting_*``: windows evaluated, alerts published per state, dead letters."""

    def __init__(self, engine: Callable[[], AlertEngine | None]) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine()
        if engine is None:
            return
        windows = _counter("tokenpulse_alerting_windows_total", "Alerting: WindowStats evaluated by the rules.")
        windows.add_metric([], engine.windows_seen)
        alerts = _counter("tokenpulse_alerting_alerts_total", "Alerting: alerts published, by state.", ["state"])
        published = dict(engine.alerts_published)
        for state in ("firing", "resolved"):
            alerts.add_metric([state], published.get(state, 0))
        dead = _counter("tokenpulse_alerting_dead_letters_total", "Alerting: invalid WindowStats dead-lettered.")
        dead.add_metric([], engine.dead_lettered)
        yield from (windows, alerts, dead)


class NotifierCollector(Collector):
    """``tokenpulse_notifier_*{notifier}``: deliveries, failed attempts and dropped alerts per notifier."""

    def __init__(self, stats: Callable[[], Mapping[str, NotifierStats]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        families = [  # (metric, NotifierStats attribute, help)
            ("deliveries", "sent", "alerts delivered"),
            ("failed_attempts", "failed_attempts", "delivery attempts that failed (retried or refused)"),
            ("dropped", "dropped", "alerts given up on or dropped from a full queue"),
        ]
        return iter(_counters_by_name("notifier", families, self.stats()))


def sink_runner_collectors(runner: SinkRunner) -> list[Collector]:
    """Collectors of a ``SinkRunner``'s sinks, alert engine and notifiers (found at scrape time, since the
    runner creates them once it runs)."""

    def sink_stats() -> dict[str, SinkStats]:
        return {sink.name: sink.stats for sink in list(runner.kafka_sinks)}

    def notifier_stats() -> dict[str, NotifierStats]:
        dispatcher = runner.dispatcher
        return dict(dispatcher.stats) if dispatcher is not None else {}

    def alert_engine() -> AlertEngine | None:
        return runner.alert_engine

    return [SinkCollector(sink_stats), AlertingCollector(alert_engine), NotifierCollector(notifier_stats)]


# ---- probe -----------------------------------------------------------------------------------------------
class ProbeCollector(Collector):
    """``tokenpulse_probe_*{workload,endpoint}``: measured requests (warm-up excluded), errors by kind, cost."""

    def __init__(self, summary: ProbeSummary) -> None:
        self.summary = summary

    def collect(self) -> Iterator[Metric]:
        labels = ["workload", "endpoint"]
        requests = _counter("tokenpulse_probe_requests_total", "Probe: measured requests done.", labels)
        errors = _counter(
            "tokenpulse_probe_errors_total",
            "Probe: measured requests that failed, by error kind.",
            [*labels, "error_kind"],
        )
        tokens = _counter("tokenpulse_probe_completion_tokens_total", "Probe: completion tokens received.", labels)
        cost = _counter("tokenpulse_probe_cost_usd_total", "Probe: cost of the measured requests (USD).", labels)
        reads = _counter(
            "tokenpulse_probe_socket_reads_total",
            "Probe: socket reads with data, by where their arrival time came from (kernel: the kernel's receive "
            "timestamp; event_loop: the reader's clock, which includes the event loop's lag).",
            [*labels, "stamp"],
        )
        workload = self.summary.workload
        for name, endpoint in sorted(list(self.summary.endpoints.items())):
            requests.add_metric([workload, name], endpoint.requests)
            for kind, count in sorted(dict(endpoint.error_kinds).items()):
                errors.add_metric([workload, name, kind], count)
            tokens.add_metric([workload, name], endpoint.completion_tokens)
            cost.add_metric([workload, name], endpoint.cost_usd)
            if endpoint.socket_reads is not None:
                total, kernel = endpoint.socket_reads.total, endpoint.socket_reads.kernel_stamped
                reads.add_metric([workload, name, "kernel"], kernel)
                reads.add_metric([workload, name, "event_loop"], total - kernel)
        yield from (requests, errors, tokens, cost, reads)


class PublisherCollector(Collector):
    """``tokenpulse_publisher_*{topic}``: the probe's Kafka publisher and its spool."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self.publisher = publisher

    def collect(self) -> Iterator[Metric]:
        stats = self.publisher.stats_snapshot()
        topic = [self.publisher.config.topic]
        totals: list[tuple[str, str, Any]] = [
            ("events_published", "events handed to the publisher", stats.published),
            ("events_delivered", "events Kafka acknowledged (replays from the spool included)", stats.delivered),
            ("events_spooled", "events written to the spool while Kafka was away", stats.spooled),
            ("events_replayed", "spooled events delivered later", stats.replayed),
            ("send_failures", "sends that failed and went to the spool", stats.send_failures),
        ]
        for what, documentation, value in totals:
            family = _counter(f"tokenpulse_publisher_{what}_total", f"Publisher: {documentation}.", ["topic"])
            family.add_metric(topic, value)
            yield family
        backlog = _gauge(
            "tokenpulse_publisher_spool_pending_bytes", "Publisher: spooled bytes not yet delivered.", ["topic"]
        )
        backlog.add_metric(topic, self.publisher.spool.pending_bytes())
        yield backlog

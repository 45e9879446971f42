"""``tokenpulse_sink_*``, ``tokenpulse_alerting_*``, ``tokenpulse_notifier_*``: the sink process's collectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from tokenpulse.metrics import counter, counters_by_name, gauge

if TYPE_CHECKING:
    from tokenpulse.sinks.alerting import AlertEngine
    from tokenpulse.sinks.consumer import SinkStats
    from tokenpulse.sinks.notifiers import NotifierStats
    from tokenpulse.sinks.runner import SinkRunner

__all__ = ["AlertingCollector", "NotifierCollector", "SinkCollector", "SinkHealthCollector", "sink_runner_collectors"]


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
        return iter(counters_by_name("sink", families, self.stats()))


class SinkHealthCollector(Collector):
    """``tokenpulse_sink_healthy{sink}``: 0 while InfluxDB refuses the sink's token or bucket (401/403/404)."""

    def __init__(self, problems: Callable[[], Mapping[str, str]], sinks: Callable[[], list[str]]) -> None:
        self.problems = problems
        self.sinks = sinks

    def collect(self) -> Iterator[Metric]:
        problems = self.problems()
        healthy = gauge(
            "tokenpulse_sink_healthy",
            "Sink: 1 while InfluxDB accepts its writes, 0 while it refuses the token or bucket (see the log).",
            ["sink"],
        )
        for name in sorted(self.sinks()):
            healthy.add_metric([name], 0.0 if name in problems else 1.0)
        yield healthy


class AlertingCollector(Collector):
    """``tokenpulse_alerting_*``: windows evaluated, alerts published per state, dead letters."""

    def __init__(self, engine: Callable[[], AlertEngine | None]) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine()
        if engine is None:
            return
        windows = counter("tokenpulse_alerting_windows_total", "Alerting: WindowStats evaluated by the rules.")
        windows.add_metric([], engine.windows_seen)
        alerts = counter("tokenpulse_alerting_alerts_total", "Alerting: alerts published, by state.", ["state"])
        published = dict(engine.alerts_published)
        for state in ("firing", "resolved"):
            alerts.add_metric([state], published.get(state, 0))
        dead = counter("tokenpulse_alerting_dead_letters_total", "Alerting: invalid WindowStats dead-lettered.")
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
        return iter(counters_by_name("notifier", families, self.stats()))


def sink_runner_collectors(runner: SinkRunner) -> list[Collector]:
    """Collectors of a ``SinkRunner``'s sinks, alert engine and notifiers (found at scrape time, since the
    runner creates them once it runs)."""

    def sink_stats() -> dict[str, SinkStats]:
        return {sink.name: sink.stats for sink in list(runner.kafka_sinks)}

    def notifier_stats() -> dict[str, NotifierStats]:
        return runner.notifier_stats()

    def alert_engine() -> AlertEngine | None:
        return runner.alert_engine

    return [
        SinkCollector(sink_stats),
        SinkHealthCollector(runner.influx_problems, lambda: list(runner.writers)),
        AlertingCollector(alert_engine),
        NotifierCollector(notifier_stats),
    ]

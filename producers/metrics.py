"""``tokenpulse_probe_*`` and ``tokenpulse_publisher_*``: the probe's collectors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from tokenpulse.metrics import counter, gauge

if TYPE_CHECKING:
    from tokenpulse.producers.probe import ProbeSummary
    from tokenpulse.producers.publisher import KafkaPublisher

__all__ = ["ProbeCollector", "PublisherCollector"]


class ProbeCollector(Collector):
    """``tokenpulse_probe_*{workload,endpoint}``: measured requests (warm-up excluded), errors by kind, cost,
    skipped slots, whether the endpoint is up, its last success and its schedule lag.

    Takes one summary (``probe``) or a callable giving the current ones (``monitor``, whose workloads change
    on reload). Counters are plain ints; the quantile and health gauges come from ``figures``, the copy the
    event loop refreshes, so a scrape never reads a sketch the loop is changing.
    """

    def __init__(self, summary: ProbeSummary | Callable[[], Iterable[ProbeSummary]]) -> None:
        self._summaries = summary if callable(summary) else (lambda: (summary,))

    def collect(self) -> Iterator[Metric]:
        labels = ["workload", "endpoint"]
        requests = counter("tokenpulse_probe_requests_total", "Probe: measured requests done.", labels)
        errors = counter(
            "tokenpulse_probe_errors_total",
            "Probe: measured requests that failed, by error kind.",
            [*labels, "error_kind"],
        )
        tokens = counter("tokenpulse_probe_completion_tokens_total", "Probe: completion tokens received.", labels)
        cost = counter("tokenpulse_probe_cost_usd_total", "Probe: cost of the measured requests (USD).", labels)
        reads = counter(
            "tokenpulse_probe_socket_reads_total",
            "Probe: socket reads with data, by where their arrival time came from (kernel: the kernel's receive "
            "timestamp; event_loop: the reader's clock, which includes the event loop's lag).",
            [*labels, "stamp"],
        )
        stale = counter(
            "tokenpulse_probe_stale_connection_retries_total",
            "Probe: requests sent again on a fresh connection because the reused keep-alive connection had been "
            "closed by the server before any response byte (not a provider error).",
            labels,
        )
        skipped = counter(
            "tokenpulse_probe_skipped_total",
            "Probe: scheduled slots not sent because the endpoint was held back (backoff, Retry-After, breaker).",
            labels,
        )
        up = gauge("tokenpulse_probe_endpoint_up", "Probe: 1 unless the endpoint's circuit breaker is open.", labels)
        last_success = gauge(
            "tokenpulse_probe_last_success_timestamp_seconds",
            "Probe: Unix time of the last successful request.",
            labels,
        )
        lag = gauge(
            "tokenpulse_probe_schedule_lag_p99_ms",
            "Probe: p99 of the schedule lag (actual minus planned send time) since start, ms.",
            labels,
        )
        for summary in list(self._summaries()):
            workload = summary.workload
            for name, endpoint in sorted(list(summary.endpoints.items())):
                key = [workload, name]
                requests.add_metric(key, endpoint.requests)
                for kind, count in sorted(dict(endpoint.error_kinds).items()):
                    errors.add_metric([*key, kind], count)
                tokens.add_metric(key, endpoint.completion_tokens)
                cost.add_metric(key, endpoint.cost_usd)
                stale.add_metric(key, endpoint.stale_connection_retries)
                if endpoint.socket_reads is not None:
                    total, kernel = endpoint.socket_reads.total, endpoint.socket_reads.kernel_stamped
                    reads.add_metric([*key, "kernel"], kernel)
                    reads.add_metric([*key, "event_loop"], total - kernel)
                fig = endpoint.figures
                skipped.add_metric(key, fig.skipped)
                up.add_metric(key, 1.0 if fig.up else 0.0)
                if fig.last_success_s is not None:
                    last_success.add_metric(key, fig.last_success_s)
                if fig.schedule_lag_p99_ms is not None:
                    lag.add_metric(key, fig.schedule_lag_p99_ms)
        yield from (requests, errors, tokens, cost, stale, reads, skipped, up, last_success, lag)


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
            ("events_spooled", "events that waited in the spool while Kafka was away", stats.spooled),
            ("events_replayed", "spooled events delivered later", stats.replayed),
            (
                "send_failures",
                "deliveries that failed (the events stay in the spool and are sent again)",
                stats.send_failures,
            ),
            (
                "events_dead_lettered",
                "records the broker refused for good, moved to the dead-letter file",
                stats.dead_lettered,
            ),
            (
                "events_refused",
                "events refused because the spool was full or unwritable (the probe stops)",
                stats.refused,
            ),
        ]
        for what, documentation, value in totals:
            family = counter(f"tokenpulse_publisher_{what}_total", f"Publisher: {documentation}.", ["topic"])
            family.add_metric(topic, value)
            yield family
        backlog = gauge(
            "tokenpulse_publisher_spool_pending_bytes", "Publisher: spooled bytes not yet delivered.", ["topic"]
        )
        backlog.add_metric(topic, self.publisher.spool.pending_bytes())
        yield backlog

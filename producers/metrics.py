"""``tokenpulse_probe_*`` and ``tokenpulse_publisher_*``: the probe's collectors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from tokenpulse.metrics import counter, gauge

if TYPE_CHECKING:
    from tokenpulse.producers.probe import ProbeSummary
    from tokenpulse.producers.publisher import KafkaPublisher

__all__ = ["ProbeCollector", "PublisherCollector"]


class ProbeCollector(Collector):
    """``tokenpulse_probe_*{workload,endpoint}``: measured requests (warm-up excluded), errors by kind, cost."""

    def __init__(self, summary: ProbeSummary) -> None:
        self.summary = summary

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

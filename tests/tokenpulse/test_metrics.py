"""Health metrics: each collector renders the counters it is given, at scrape time; the server and its option."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tokenpulse.errors import TokenpulseError
from tokenpulse.metrics import MetricsEndpoint, call_on_loop, serve_metrics
from tokenpulse.producers.adapters.wire import SocketReads
from tokenpulse.producers.metrics import ProbeCollector, PublisherCollector
from tokenpulse.producers.probe import EndpointSummary, ProbeSummary
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig
from tokenpulse.schemas import encode
from tokenpulse.sinks.consumer import SinkStats
from tokenpulse.sinks.metrics import AlertingCollector, NotifierCollector, SinkCollector
from tokenpulse.sinks.notifiers import NotifierStats
from tokenpulse.streams.app import WindowProcessor, WorkerConfig
from tokenpulse.streams.metrics import WorkerCollector
from tokenpulse.testing.metrics import Samples
from tokenpulse.testing.producers import FakeProducer
from tokenpulse.testing.sinks import make_timing
from tokenpulse.testing.streams import DEFAULT_START_NS, HISTORICAL_MAX_AGE, TimingFactory, TimingKey

S = 1_000_000_000


def fresh(*collectors: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


# ---- worker ----------------------------------------------------------------------------------------------
class ResolvedTopic:
    """A faust topic (or the changelog) whose sends resolve at once."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, key: Any = None, value: Any = None, headers: Any = None) -> asyncio.Future[None]:
        return self.resolved()

    def resolved(self) -> asyncio.Future[None]:
        self.sent += 1
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def worker_processor() -> tuple[WindowProcessor, ResolvedTopic]:
    changelog, stats = ResolvedTopic(), ResolvedTopic()

    async def flush_producer() -> None:
        pass

    table = SimpleNamespace(
        data={},
        send_changelog=lambda partition, key, value: changelog.resolved(),
        app=SimpleNamespace(producer=SimpleNamespace(flush=flush_producer)),
    )
    config = WorkerConfig(windows=("1m",), grace="5s", max_event_age=HISTORICAL_MAX_AGE)
    processor = WindowProcessor(
        config, table=table, stats_topic=stats, dlq_topic=ResolvedTopic(), source_topic="t.request-timings"
    )
    return processor, stats


def event_at(offset: int, value: bytes | None) -> SimpleNamespace:
    message = SimpleNamespace(partition=0, offset=offset, key=b"sim/m", value=value)
    return SimpleNamespace(message=message, ack=lambda: None)


def feed_worker(processor: WindowProcessor) -> None:
    factory = TimingFactory(seed=11)
    key = TimingKey("sim", "m")
    at_30s = encode(factory.event(key, DEFAULT_START_NS + 30 * S))
    at_70s = encode(factory.event(key, DEFAULT_START_NS + 70 * S))  # closes [0 s, 60 s): 70 > 60 + grace 5
    at_10s = encode(factory.event(key, DEFAULT_START_NS + 10 * S))  # after that: late for every window
    for offset, value in enumerate([at_30s, at_70s, b"{not json", at_70s, at_10s]):  # offset 3: a duplicate id
        processor.on_message(event_at(offset, value))
    processor.on_message(event_at(1, at_70s))  # redelivered: at or below the applied offset


def test_worker_collector_reports_processor_and_partition_counters_and_window_state() -> None:
    processor, stats_topic = worker_processor()
    feed_worker(processor)
    registry = fresh(WorkerCollector(processor))

    before = Samples.of(registry)
    assert before.value("tokenpulse_worker_events_consumed_total") == 6
    assert before.value("tokenpulse_worker_events_redelivered_total") == 1
    assert before.value("tokenpulse_worker_pending_events") == 6
    assert before.value("tokenpulse_worker_dead_letters_total") == 0  # counted once the flush sent them
    outcomes = {
        o: before.value("tokenpulse_worker_partition_events_total", partition="0", outcome=o)
        for o in ("accepted", "duplicate", "replayed", "late")
    }
    assert outcomes == {"accepted": 2, "duplicate": 1, "replayed": 0, "late": 1}
    # the pane of [0 s, 60 s) closed and was dropped; the one of [60 s, 120 s) is open
    assert before.value("tokenpulse_worker_open_panes", partition="0") == 1
    assert before.value("tokenpulse_worker_open_windows", partition="0") == 1
    assert before.value("tokenpulse_worker_event_time_seconds", partition="0") == (DEFAULT_START_NS + 70 * S) / S

    asyncio.run(processor.flush())

    after = Samples.of(registry)  # read again at scrape time: nothing was pushed to the collector
    assert after.value("tokenpulse_worker_pending_events") == 0
    assert after.value("tokenpulse_worker_dead_letters_total") == 1
    assert after.value("tokenpulse_worker_windows_emitted_total") == stats_topic.sent == 1
    assert after.value("tokenpulse_worker_flushes_total") == 1
    assert after.value("tokenpulse_worker_offset_gaps_total") == 0


def test_worker_collector_without_partitions_reports_zero_counters_and_no_partition_series() -> None:
    processor, _ = worker_processor()
    samples = Samples.of(fresh(WorkerCollector(processor)))
    assert samples.value("tokenpulse_worker_events_consumed_total") == 0
    assert samples.labelled("tokenpulse_worker_open_panes") == {}
    assert samples.labelled("tokenpulse_worker_partition_events_total") == {}


class LoopThread:
    """An event loop running in its own thread, like the faust worker's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        while not self.loop.is_running():
            time.sleep(0.001)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_snapshots_run_on_the_components_event_loop_and_a_blocked_loop_fails_the_scrape() -> None:
    running = LoopThread()
    try:
        assert call_on_loop(running.loop, threading.get_ident, 2.0) == running.thread.ident
        with pytest.raises(ZeroDivisionError):
            call_on_loop(running.loop, lambda: 1 // 0, 2.0)

        processor, _ = worker_processor()
        feed_worker(processor)
        collector = WorkerCollector(processor, loop=running.loop, timeout_s=0.2)
        assert Samples.of(fresh(collector)).value("tokenpulse_worker_events_consumed_total") == 6

        running.loop.call_soon_threadsafe(time.sleep, 1.0)  # the loop is busy for a second
        with pytest.raises(TimeoutError, match=r"did not answer a metrics scrape within 0\.2s"):
            Samples.of(fresh(collector))
    finally:
        running.close()
    # a loop that is not running (before start, after stop) is read from the calling thread
    assert call_on_loop(running.loop, threading.get_ident, 0.1) == threading.get_ident()


# ---- sinks, alerting, notifiers --------------------------------------------------------------------------
def test_sink_collector_reports_every_sinks_stats() -> None:
    stats = {
        "llm_request": SinkStats(records=120, written=117, dead_lettered=3, batches=4, write_retries=2),
        "llm_window": SinkStats(records=7, written=7, batches=1),
    }
    registry = fresh(SinkCollector(lambda: stats))
    samples = Samples.of(registry)
    assert samples.labelled("tokenpulse_sink_records_total") == {
        frozenset({("sink", "llm_request")}): 120,
        frozenset({("sink", "llm_window")}): 7,
    }
    assert samples.value("tokenpulse_sink_points_written_total", sink="llm_request") == 117
    assert samples.value("tokenpulse_sink_dead_letters_total", sink="llm_request") == 3
    assert samples.value("tokenpulse_sink_batches_total", sink="llm_request") == 4
    assert samples.value("tokenpulse_sink_write_retries_total", sink="llm_request") == 2
    assert samples.value("tokenpulse_sink_write_retries_total", sink="llm_window") == 0
    stats["llm_window"].written += 5  # read at scrape time
    assert Samples.of(registry).value("tokenpulse_sink_points_written_total", sink="llm_window") == 12


def test_alerting_collector_reports_windows_alerts_by_state_and_dead_letters() -> None:
    engine: Any = SimpleNamespace(windows_seen=42, alerts_published=Counter(firing=3, resolved=2), dead_lettered=1)
    samples = Samples.of(fresh(AlertingCollector(lambda: engine)))
    assert samples.value("tokenpulse_alerting_windows_total") == 42
    assert samples.value("tokenpulse_alerting_alerts_total", state="firing") == 3
    assert samples.value("tokenpulse_alerting_alerts_total", state="resolved") == 2
    assert samples.value("tokenpulse_alerting_dead_letters_total") == 1
    no_rules = Samples.of(fresh(AlertingCollector(lambda: None)))
    assert not any(name.startswith("tokenpulse_alerting") for name in no_rules.names())


def test_notifier_collector_reports_deliveries_failures_and_drops_per_notifier() -> None:
    stats = {"webhook-0": NotifierStats(sent=5, failed_attempts=2), "slack": NotifierStats(sent=1, dropped=1)}
    samples = Samples.of(fresh(NotifierCollector(lambda: stats)))
    assert samples.value("tokenpulse_notifier_deliveries_total", notifier="webhook-0") == 5
    assert samples.value("tokenpulse_notifier_failed_attempts_total", notifier="webhook-0") == 2
    assert samples.value("tokenpulse_notifier_dropped_total", notifier="webhook-0") == 0
    assert samples.value("tokenpulse_notifier_deliveries_total", notifier="slack") == 1
    assert samples.value("tokenpulse_notifier_dropped_total", notifier="slack") == 1


# ---- probe -----------------------------------------------------------------------------------------------
def test_probe_collector_reports_requests_errors_by_kind_tokens_and_cost_per_endpoint() -> None:
    summary = ProbeSummary("chat", "probe-1", {"fast": EndpointSummary("fast"), "slow": EndpointSummary("slow")})
    for i in range(4):
        summary.endpoints["fast"].add(make_timing(completion_tokens=10 + i, cost_usd=0.25))
    for kind in ("timeout", "timeout", "http_5xx"):
        summary.endpoints["slow"].add(
            make_timing(status="error", error_kind=kind, ttft_ms=None, tpot_ms=None, completion_tokens=0, cost_usd=0.0)
        )
    samples = Samples.of(fresh(ProbeCollector(summary)))
    assert samples.value("tokenpulse_probe_requests_total", workload="chat", endpoint="fast") == 4
    assert samples.value("tokenpulse_probe_requests_total", workload="chat", endpoint="slow") == 3
    assert samples.labelled("tokenpulse_probe_errors_total") == {
        frozenset({("workload", "chat"), ("endpoint", "slow"), ("error_kind", "timeout")}): 2,
        frozenset({("workload", "chat"), ("endpoint", "slow"), ("error_kind", "http_5xx")}): 1,
    }
    assert samples.value("tokenpulse_probe_completion_tokens_total", workload="chat", endpoint="fast") == 46
    assert samples.value("tokenpulse_probe_cost_usd_total", workload="chat", endpoint="fast") == 1.0
    assert samples.labelled("tokenpulse_probe_socket_reads_total") == {}  # neither adapter counted its reads


def test_probe_collector_reports_where_the_arrival_times_of_socket_reads_came_from() -> None:
    summary = ProbeSummary("chat", "probe-1", {"fast": EndpointSummary("fast")})
    summary.endpoints["fast"].socket_reads = SocketReads(total=100, kernel_stamped=97)
    samples = Samples.of(fresh(ProbeCollector(summary)))
    assert samples.labelled("tokenpulse_probe_socket_reads_total") == {
        frozenset({("workload", "chat"), ("endpoint", "fast"), ("stamp", "kernel")}): 97,
        frozenset({("workload", "chat"), ("endpoint", "fast"), ("stamp", "event_loop")}): 3,
    }


def unreachable_broker(config: PublisherConfig) -> Any:
    raise ConnectionError("no broker")


@pytest.mark.parametrize("reachable", [True, False])
def test_publisher_collector_reports_delivered_spooled_and_the_spool_backlog(tmp_path: Path, reachable: bool) -> None:
    config = PublisherConfig(bootstrap="127.0.0.1:1", topic="t.request-timings", spool_path=tmp_path / "spool.sqlite")
    publisher = KafkaPublisher(config, lambda _: FakeProducer() if reachable else unreachable_broker(config))
    deadline = time.monotonic() + 5
    while reachable and not publisher.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(3):
        publisher.publish(make_timing())
    publisher.close(timeout_s=1.0)
    samples = Samples.of(fresh(PublisherCollector(publisher)))
    topic = "t.request-timings"
    assert samples.value("tokenpulse_publisher_events_published_total", topic=topic) == 3
    assert samples.value("tokenpulse_publisher_events_delivered_total", topic=topic) == (3 if reachable else 0)
    assert samples.value("tokenpulse_publisher_events_spooled_total", topic=topic) == (0 if reachable else 3)
    backlog = samples.value("tokenpulse_publisher_spool_pending_bytes", topic=topic)
    assert backlog is not None and (backlog == 0) is reachable and (reachable or backlog > 3 * 500)  # ~600 B each


# ---- the server ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_port_zero_serves_nothing() -> None:
    assert serve_metrics(MetricsEndpoint(0), [SinkCollector(dict)]) is None


def test_server_serves_the_collectors_and_process_metrics_over_http() -> None:
    stats = {"llm_alert": SinkStats(records=9, written=9, batches=2)}
    server = serve_metrics(MetricsEndpoint(free_port()), [SinkCollector(lambda: stats)])
    assert server is not None
    try:
        response = httpx.get(server.url, timeout=5.0)
        assert response.status_code == 200
        samples = Samples(response.text)
        assert samples.value("tokenpulse_sink_points_written_total", sink="llm_alert") == 9
        assert (samples.value("process_resident_memory_bytes") or 0) > 0
    finally:
        server.close()


def test_a_port_in_use_is_a_user_error_naming_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TokenpulseError, match=rf"--metrics-port {port}: cannot listen on 127.0.0.1:{port}.*0 to"):
            serve_metrics(MetricsEndpoint(port), [SinkCollector(dict)])

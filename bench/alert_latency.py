"""Alert latency: from a regressed ``WindowStats`` on the window-stats topic to the webhook receiving it.

Usage: eval "$(tokenpulse stack env)"; python bench/alert_latency.py [TRIALS] [--full-chain]

What is measured: the part of the pipeline after the stream worker, with the real pieces: a
``WindowStats`` published to Kafka (kafka-python, acks=all) -> ``AlertEngine`` (aiokafka consumer,
``RuleEngine`` regression rule) -> the alert published to the alerts topic -> ``AlertDelivery`` (its own consumer) ->
``WebhookNotifier`` -> a real HTTP receiver in this process. Each trial uses its own workload key: three
healthy windows build the baseline, then the clock starts as the regressed window is sent and stops
when the receiver has the firing alert.

The issue's target counts from the first event of a regression: that event waits for its window to
close (at most one window step, plus the worker's grace) before the worker emits the window, so the
budget left for this part is 10 s.

``--full-chain`` also runs the whole chain once, from the first regressed ``RequestTiming`` on the
request-timings topic: a ``tokenpulse worker`` subprocess (``python -m streams``, 10 s tumbling windows,
1 s grace) -> WindowStats -> the same alerting path -> webhook. Three workloads regress at
different phases of the window (0.1 s, a third and two thirds after a window boundary), since the wait
for the window to close depends on it; the target there is one window step + 10 s = 20 s.

Baseline in the same run: the bare transport of one Kafka hop plus one HTTP POST (a kafka-python consumer
that posts each record it receives to the same receiver), so the ratio shows what the alerting
machinery adds on top of the transports it cannot avoid.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from kafka import KafkaConsumer, KafkaProducer

from tokenpulse.schemas import encode
from tokenpulse.sinks.alerting import AlertEngine
from tokenpulse.sinks.notifiers import WebhookNotifier
from tokenpulse.sinks.rules import parse_rules
from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.streams.cli import worker_argv
from tokenpulse.testing.services import InfluxEndpoint, unique_name
from tokenpulse.testing.sinks import MINUTE_NS, make_timing, make_window, settings_for, wait_until
from tokenpulse.testing.streams import WorkerProcess, create_topics

BUDGET_S = 10.0
RULES = parse_rules(
    {
        "rules": [
            {
                "name": "ttft-regression",
                "kind": "regression",
                "metric": "ttft_p95_ms",
                "worse_by_pct": 50,
                "baseline_period": "1h",
                "min_samples": 30,
                "min_baseline_windows": 3,
                "for_windows": 1,
            }
        ]
    }
)


class Receiver:
    """An HTTP server that stamps each JSON body with ``perf_counter()`` on arrival."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                arrived = time.perf_counter()
                self.send_response(200)
                self.end_headers()
                with receiver.changed:
                    receiver.arrivals.setdefault(str(body.get("workload") or body.get("probe")), arrived)
                    receiver.changed.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, key: str, timeout_s: float = 60.0) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: key in self.arrivals, timeout_s):
                raise SystemExit(f"no webhook call for {key!r} within {timeout_s}s")
            return self.arrivals[key]


def transport_baseline(bootstrap: str, receiver: Receiver, producer: KafkaProducer, trials: int) -> list[float]:
    """One Kafka hop plus one HTTP POST, per trial."""
    topic = unique_name("bench-hop")
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=unique_name("hop"),
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    stop = threading.Event()

    def forward() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        client.post(receiver.url, content=record.value)

    producer.send(topic, b'{"probe": "warm-up"}').get(30)
    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    receiver.wait_for("warm-up")
    latencies = []
    for i in range(trials):
        sent = time.perf_counter()
        producer.send(topic, json.dumps({"probe": f"hop-{i}"}).encode())
        producer.flush()
        latencies.append(receiver.wait_for(f"hop-{i}") - sent)
    stop.set()
    thread.join()
    consumer.close()
    return latencies


def alert_trials(bootstrap: str, receiver: Receiver, producer: KafkaProducer, trials: int) -> list[float]:
    env = os.environ
    server = InfluxEndpoint(
        env["TOKENPULSE_INFLUX_URL"],
        env["TOKENPULSE_INFLUX_TOKEN"],
        env.get("TOKENPULSE_INFLUX_ORG", "tokenpulse"),
        "unused",
    )
    influx = server.with_new_bucket("bench-alert")
    settings = settings_for(bootstrap, influx, unique_name("bench-alert"))
    topics = settings.topics
    runner = SinkRunner(settings, RULES, [WebhookNotifier(receiver.url)], sinks=(), seed_baselines=False)
    runner.start()
    engine = runner.alert_engine
    assert engine is not None
    latencies = []
    try:
        end = (time.time_ns() // MINUTE_NS - 30) * MINUTE_NS
        for i in range(trials):
            workload = f"trial-{i}"
            healthy = [make_window(workload=workload, ttft_p95=400.0, window_end=end + k * MINUTE_NS) for k in range(3)]
            target = engine.windows_seen + len(healthy)
            for window in healthy:
                producer.send(topics.window_stats, encode(window), key=window.kafka_key())
            producer.flush()
            wait_until(functools.partial(_seen_at_least, engine, target), 60, "healthy windows", poll_s=0.01)
            time.sleep(0.5)  # the engine is idle in getmany again, as it is between real windows
            regressed = make_window(workload=workload, ttft_p95=800.0, window_end=end + 3 * MINUTE_NS)
            sent = time.perf_counter()
            producer.send(topics.window_stats, encode(regressed), key=regressed.kafka_key())
            producer.flush()
            latencies.append(receiver.wait_for(workload) - sent)
    finally:
        runner.stop()
    return latencies


def full_chain(bootstrap: str, receiver: Receiver, window_s: int = 10) -> list[float]:
    """First regressed RequestTiming -> worker -> WindowStats -> alerting -> webhook, per workload."""
    env = os.environ
    server = InfluxEndpoint(
        env["TOKENPULSE_INFLUX_URL"],
        env["TOKENPULSE_INFLUX_TOKEN"],
        env.get("TOKENPULSE_INFLUX_ORG", "tokenpulse"),
        "unused",
    )
    prefix = unique_name("bench-chain")
    settings = settings_for(bootstrap, server.with_new_bucket("bench-chain"), prefix)
    topics = settings.topics
    create_topics(bootstrap, [topics.request_timings, topics.request_timings_dlq, topics.window_stats], 2)
    workloads = [f"chain-{j}" for j in range(3)]
    regress_from: dict[str, float] = {}  # wall-clock seconds
    first_regressed: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        child_env = dict(
            env, TOKENPULSE_KAFKA_BOOTSTRAP=bootstrap, TOKENPULSE_TOPIC_PREFIX=prefix, TOKENPULSE_DATA_DIR=data_dir
        )
        argv = worker_argv(windows=(f"{window_s}s",), grace="1s", partitions=2, idle_close_s=5.0)
        worker = WorkerProcess(argv, child_env, Path(data_dir) / "worker.log").start()
        runner = SinkRunner(settings, RULES, [WebhookNotifier(receiver.url)], sinks=(), seed_baselines=False)
        runner.start()
        engine = runner.alert_engine
        assert engine is not None
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        deadline = time.monotonic() + 240
        try:
            while len(first_regressed) < len(workloads) or not all(w in receiver.arrivals for w in workloads):
                if time.monotonic() > deadline:
                    raise SystemExit(f"full chain: no alert in time; worker log:\n{worker.log_tail()}")
                if not regress_from and engine.windows_seen >= 5 * len(workloads):
                    # Baselines are in; the regressions start 0.1 s, 1/3 and 2/3 of a window after the next
                    # window boundary (event time is wall time here).
                    boundary = (time.time() // window_s + 1) * window_s + 0.1
                    regress_from = {w: boundary + j * window_s / len(workloads) for j, w in enumerate(workloads)}
                for workload in workloads:
                    now = time.perf_counter()
                    regressed = workload in regress_from and time.time() >= regress_from[workload]
                    timing = make_timing(
                        started_at=time.time_ns(),
                        workload=workload,
                        ttft_ms=800.0 if regressed else 400.0,
                        e2e_ms=2000.0,
                    )
                    producer.send(topics.request_timings, encode(timing), key=timing.kafka_key())
                    if regressed and workload not in first_regressed:
                        producer.flush()
                        first_regressed[workload] = now
                time.sleep(0.05)
        finally:
            producer.close()
            runner.stop()
            worker.stop()
    return [receiver.arrivals[w] - first_regressed[w] for w in workloads]


def _seen_at_least(engine: AlertEngine, windows: int) -> bool:
    return engine.windows_seen >= windows


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(values) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    trials = int(args[0]) if args else 10
    bootstrap = os.environ["TOKENPULSE_KAFKA_BOOTSTRAP"]
    receiver = Receiver()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        hop = transport_baseline(bootstrap, receiver, producer, trials)
        alert = alert_trials(bootstrap, receiver, producer, trials)
        chain = full_chain(bootstrap, receiver) if "--full-chain" in sys.argv else None
    finally:
        producer.close()
        receiver.server.shutdown()
    print(f"trials: {trials}")
    print(f"baseline: one Kafka hop + one HTTP POST: {_summary(hop)}")
    print(f"alert path: WindowStats sent -> AlertEngine -> alerts topic -> webhook received: {_summary(alert)}")
    print(f"ratio alert path / baseline (medians): {statistics.median(alert) / statistics.median(hop):.1f}")
    print(f"worst alert path vs the {BUDGET_S:.0f} s left after the window step: {max(alert) / BUDGET_S:.3f} of budget")
    if chain is not None:
        figures = ", ".join(f"{latency:.1f} s" for latency in chain)
        print(
            f"full chain (first regressed RequestTiming -> worker, 10 s windows -> alert -> webhook), "
            f"regression starting 0.1 s, 1/3, 2/3 into a window: {figures}"
        )
        print(f"worst full chain vs target one window step + 10 s = 20 s: {max(chain) / 20.0:.2f} of target")


if __name__ == "__main__":
    main()

"""Alert latency: from a regressed ``WindowStats`` on the window-stats topic to the webhook receiving it.

Usage: eval "$(tokenpulse stack env)"; python bench/alert_latency.py [TRIALS]

What is measured: the part of the pipeline after the stream worker, with the real pieces: a
``WindowStats`` published to Kafka (kafka-python, acks=all) -> ``AlertEngine`` (aiokafka consumer,
``RuleEngine`` regression rule) -> the alert published to the alerts topic -> ``NotificationDispatcher`` ->
``WebhookNotifier`` -> a real HTTP receiver in this process. Each trial uses its own workload key: three
healthy windows build the baseline, then the clock starts as the regressed window is sent and stops
when the receiver has the firing alert.

The issue's target counts from the first event of a regression: that event waits for its window to
close (at most one window step, plus the worker's grace) before the worker emits the window, so the
budget left for this part is 10 s.

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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from kafka import KafkaConsumer, KafkaProducer

from schemas import encode
from sinks.notifiers import WebhookNotifier
from sinks.runner import SinkRunner
from sinks.testing import MINUTE_NS, make_window, settings_for, wait_until
from streams.alerting import AlertEngine
from streams.rules import parse_rules
from tokenpulse.testing.services import InfluxEndpoint, unique_name

BUDGET_S = 10.0
RULES = parse_rules(
    {
        "rules": [
            {"name": "ttft-regression", "kind": "regression", "metric": "ttft_p95_ms", "worse_by_pct": 50,
             "baseline_period": "1h", "min_samples": 30, "min_baseline_windows": 3, "for_windows": 1}
        ]
    }
)  # fmt: skip


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
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=unique_name("hop"),
                             auto_offset_reset="earliest", fetch_max_wait_ms=50)  # fmt: skip
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
    server = InfluxEndpoint(env["TOKENPULSE_INFLUX_URL"], env["TOKENPULSE_INFLUX_TOKEN"],
                            env.get("TOKENPULSE_INFLUX_ORG", "tokenpulse"), "unused")  # fmt: skip
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
            for window in healthy:
                producer.send(topics.window_stats, encode(window), key=window.kafka_key())
            producer.flush()
            target = engine.windows_seen + len(healthy)
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


def _seen_at_least(engine: AlertEngine, windows: int) -> bool:
    return engine.windows_seen >= windows


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(values) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    bootstrap = os.environ["TOKENPULSE_KAFKA_BOOTSTRAP"]
    receiver = Receiver()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        hop = transport_baseline(bootstrap, receiver, producer, trials)
        alert = alert_trials(bootstrap, receiver, producer, trials)
    finally:
        producer.close()
        receiver.server.shutdown()
    print(f"trials: {trials}")
    print(f"baseline: one Kafka hop + one HTTP POST: {_summary(hop)}")
    print(f"alert path: WindowStats sent -> AlertEngine -> alerts topic -> webhook received: {_summary(alert)}")
    print(f"ratio alert path / baseline (medians): {statistics.median(alert) / statistics.median(hop):.1f}")
    print(f"worst alert path vs the {BUDGET_S:.0f} s left after the window step: {max(alert) / BUDGET_S:.3f} of budget")


if __name__ == "__main__":
    main()

"""A simulated regression (TTFT doubles, then recovers) through real Kafka, the alert engine, real HTTP
receivers and real influxd: exactly one firing and one resolved alert everywhere."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import AnyUrl, BaseModel, ConfigDict

from tokenpulse.sinks.notifiers import AlertmanagerNotifier, Notifier, SlackNotifier, WebhookNotifier
from tokenpulse.sinks.rules import parse_rules
from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.testing.sinks import BASE_NS, MINUTE_NS, flux_count, make_window, produce, settings_for, wait_until

pytestmark = pytest.mark.integration


class Receiver:
    """A real HTTP server that records JSON bodies; the first ``fail_first`` requests get a 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[tuple[str, Any]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                receiver.bodies.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PostableAlert(BaseModel):
    """Alertmanager API v2 ``postableAlert`` (openapi.yaml): labels required, string maps, date-times."""

    model_config = ConfigDict(extra="forbid", strict=False)
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: AnyUrl | None = None


RULES = {
    "rules": [
        {
            "name": "ttft-regression",
            "kind": "regression",
            "metric": "ttft_p95_ms",
            "worse_by_pct": 50,
            "baseline_period": "1h",
            "min_samples": 30,
            "min_baseline_windows": 3,
            "for_windows": 2,
            "clear_windows": 2,
            "severity": "critical",
        }
    ]
}


def test_regression_fires_once_and_resolves_once(kafka_bootstrap, influx, topic_prefix) -> None:
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    webhook, slack, alertmanager = Receiver(fail_first=2), Receiver(), Receiver()
    notifiers: list[Notifier] = [
        WebhookNotifier(webhook.url + "/hook"),
        SlackNotifier(slack.url + "/services/T000/B000/secret"),
        AlertmanagerNotifier(alertmanager.url, generator_url="http://tokenpulse.local/alerts"),
    ]
    runner = SinkRunner(settings, parse_rules(RULES), notifiers)
    runner.start()
    try:
        # Baseline 400 ms, then TTFT doubles for 4 windows, then recovers. Each window is sent twice
        # (a re-emitting worker) and the whole stream is replayed once more at the end.
        profile = [400.0] * 6 + [800.0] * 4 + [400.0] * 5
        windows = [make_window(ttft_p95=v, window_end=BASE_NS + (i + 1) * MINUTE_NS) for i, v in enumerate(profile)]
        produce(kafka_bootstrap, settings.topics.window_stats, [w for w in windows for _ in range(2)])
        produce(kafka_bootstrap, settings.topics.window_stats, windows)
        engine = runner.alert_engine
        assert engine is not None
        wait_until(lambda: engine.windows_seen >= 45, 60, "all windows evaluated")
        wait_until(lambda: len(webhook.bodies) >= 2 and len(alertmanager.bodies) >= 2, 30, "notifications")
        with influx.client() as client:
            wait_until(lambda: flux_count(client, influx.bucket, "llm_alert", "threshold") >= 2, 30, "llm_alert")
            assert flux_count(client, influx.bucket, "llm_alert", "threshold") == 2
    finally:
        runner.stop()
        for receiver in (webhook, slack, alertmanager):
            receiver.close()

    assert [(a.state, (a.window_end - BASE_NS) // MINUTE_NS) for a in engine.alerts] == [
        ("firing", 8),
        ("resolved", 12),
    ]
    states = [body["state"] for _, body in webhook.bodies]
    assert states == ["firing", "resolved"]
    firing = webhook.bodies[0][1]
    assert firing["rule"] == "ttft-regression" and firing["value"] == 800.0 and firing["baseline"] == 400.0
    assert webhook.bodies[0][0] == "/hook"
    assert runner.notifier_stats()["webhook"].failed_attempts == 2

    assert [path for path, _ in alertmanager.bodies] == ["/api/v2/alerts", "/api/v2/alerts"]
    posted = [PostableAlert.model_validate(item) for _, body in alertmanager.bodies for item in body]
    assert len(posted) == 2
    assert posted[0].labels == posted[1].labels  # same incident
    assert posted[0].labels["alertname"] == "ttft-regression"
    assert (posted[0].labels["region"], posted[0].labels["window"]) == ("local", "1m")
    # Firing: endsAt is 4 re-send intervals after the post (Alertmanager keeps it active until then).
    assert posted[0].endsAt is not None and posted[0].endsAt.timestamp() > time.time() + 60
    assert posted[1].endsAt is not None and posted[1].startsAt is not None
    assert posted[1].endsAt.timestamp() == (BASE_NS + 12 * MINUTE_NS) / 1e9  # the window that resolved it

    assert [body["text"].split("]")[0] for _, body in slack.bodies] == [
        ":rotating_light: [FIRING",
        ":white_check_mark: [RESOLVED",
    ]

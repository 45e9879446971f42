"""``tokenpulse sink --metrics-port``: the sink process on real Kafka and influxd serves the counters of its
sinks, its alert engine and its notifiers at /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tokenpulse.stack.process import free_port
from tokenpulse.testing import InfluxEndpoint
from tokenpulse.testing.metrics import scrape_until
from tokenpulse.testing.sinks import BASE_NS, MINUTE_NS, make_timing, make_window, produce

pytestmark = pytest.mark.integration

RULES = """\
rules:
  - name: ttft-p95-high
    kind: threshold
    metric: ttft_p95_ms
    above: 800
    for_windows: 1
"""


class FlakyReceiver:
    """A webhook receiver that answers the first POST with 503 (Retry-After: 0) and the rest with 200."""

    def __init__(self) -> None:
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts += 1
                self.send_response(503 if receiver.posts == 1 else 200)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[FlakyReceiver]:
    receiver = FlakyReceiver()
    yield receiver
    receiver.close()


def test_sink_serves_sink_alerting_and_notifier_counters(
    kafka_bootstrap: str, influx: InfluxEndpoint, topic_prefix: str, tmp_path: Path, receiver: FlakyReceiver
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "TOKENPULSE_CONFIG"}
    env.update(
        TOKENPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_INFLUX_URL=influx.url,
        TOKENPULSE_INFLUX_TOKEN=influx.token,
        TOKENPULSE_INFLUX_ORG=influx.org,
        TOKENPULSE_INFLUX_BUCKET=influx.bucket,
        TOKENPULSE_DATA_DIR=str(tmp_path / "data"),
    )
    argv = [
        sys.executable,
        "-m",
        "tokenpulse",
        "sink",
        "--rules",
        str(rules),
        "--webhook",
        receiver.url,
        "--metrics-port",
        str(port),
    ]
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        timings = [make_timing(started_at=BASE_NS + i * 1_000_000) for i in range(50)]
        produce(kafka_bootstrap, f"{topic_prefix}.request-timings", [*timings, b"{not json", b'{"schema_version": 1}'])
        # three windows over the threshold: one firing alert (it stays firing); one record that is no window
        windows = [make_window(window_end=BASE_NS + i * MINUTE_NS, ttft_p95=900.0) for i in range(1, 4)]
        produce(kafka_bootstrap, f"{topic_prefix}.window-stats", [*windows, b"[]"])
        samples = scrape_until(
            f"http://127.0.0.1:{port}/metrics",
            lambda s: (
                s.value("tokenpulse_sink_records_total", sink="llm_request") == 52
                and s.value("tokenpulse_alerting_windows_total") == 3
                and s.value("tokenpulse_notifier_deliveries_total", notifier="webhook-0") == 1
                and s.value("tokenpulse_sink_points_written_total", sink="llm_alert") == 1
            ),
            timeout_s=35.0,
            context=lambda: "\n".join(log.read_text(errors="replace").splitlines()[-30:]),
        )
    finally:
        process.terminate()
        process.wait(30)
    assert samples.value("tokenpulse_sink_points_written_total", sink="llm_request") == 50
    assert samples.value("tokenpulse_sink_dead_letters_total", sink="llm_request") == 2
    assert samples.value("tokenpulse_sink_points_written_total", sink="llm_window") == 3
    assert samples.value("tokenpulse_sink_dead_letters_total", sink="llm_window") == 1
    assert samples.value("tokenpulse_sink_write_retries_total", sink="llm_request") == 0
    assert samples.value("tokenpulse_alerting_alerts_total", state="firing") == 1
    assert samples.value("tokenpulse_alerting_alerts_total", state="resolved") == 0
    assert samples.value("tokenpulse_alerting_dead_letters_total") == 1
    assert samples.value("tokenpulse_notifier_failed_attempts_total", notifier="webhook-0") == 1
    assert samples.value("tokenpulse_notifier_dropped_total", notifier="webhook-0") == 0
    assert receiver.posts == 2
    assert process.returncode == 0, log.read_text(errors="replace")[-3000:]

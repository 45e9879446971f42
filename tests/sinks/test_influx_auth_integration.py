"""InfluxDB refusing the sink's token (401) or bucket (404): unhealthy on /metrics and in the log with the
fix at once, and a non-zero exit after ``--influx-auth-exit-after``; real Kafka, real influxd."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tokenpulse.sinks.runner import SinkRunner, SinkUnhealthy
from tokenpulse.testing.receivers import free_port
from tokenpulse.testing.sinks import make_window, produce, settings_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def test_wrong_token_is_unhealthy_then_exits_non_zero(kafka_bootstrap, influx, topic_prefix, tmp_path) -> None:
    wrong_token = "wrong-token-" + "x" * 20
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    env.update(
        TOKENPULSE_HOME=str(tmp_path / "home"),
        TOKENPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_INFLUX_URL=influx.url,
        TOKENPULSE_INFLUX_TOKEN=wrong_token,
        TOKENPULSE_INFLUX_ORG=influx.org,
        TOKENPULSE_INFLUX_BUCKET=influx.bucket,
        COLUMNS="400",
    )
    sink = subprocess.Popen(
        [sys.executable, "-m", "tokenpulse", "sink", "--influx-auth-exit-after", "15s", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        healthy = 'tokenpulse_sink_healthy{sink="llm_window"} 1.0'
        wait_until(lambda: healthy in _scrape(port), 60, "the sink's /metrics, healthy before any write")
        produce(kafka_bootstrap, settings.topics.window_stats, [make_window()])
        wait_until(
            lambda: 'tokenpulse_sink_healthy{sink="llm_window"} 0.0' in _scrape(port), 30, "llm_window unhealthy"
        )
        started = time.monotonic()
        stdout, stderr = sink.communicate(timeout=60)
        waited_s = time.monotonic() - started
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    output = stdout + stderr
    assert sink.returncode == 2, output[-3000:]
    assert waited_s < 30
    assert wrong_token not in output
    assert "Traceback" not in output
    unhealthy = [line for line in output.splitlines() if "sink llm_window unhealthy" in line]
    assert len(unhealthy) == 1 and "HTTP 401" in unhealthy[0] and "fix TOKENPULSE_INFLUX_TOKEN" in unhealthy[0]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: sink llm_window gave up after 15s: InfluxDB at") and "HTTP 401" in last
    print("InfluxDB 401:", last)


def test_missing_bucket_names_the_bucket(kafka_bootstrap, influx, topic_prefix) -> None:
    settings = settings_for(kafka_bootstrap, influx, topic_prefix)
    settings = settings.model_copy(update={"influx_bucket": "no-such-bucket-12"})
    runner = SinkRunner(settings, sinks=("llm_window",), influx_auth_exit_after_s=5.0)
    runner.start()
    produce(kafka_bootstrap, settings.topics.window_stats, [make_window()])
    wait_until(lambda: bool(runner.influx_problems()), 30, "the 404 to be reported")
    [problem] = runner.influx_problems().values()
    assert "HTTP 404" in problem and "'no-such-bucket-12'" in problem and "TOKENPULSE_INFLUX_BUCKET" in problem
    assert runner._thread is not None
    runner._thread.join(30)
    with pytest.raises(SinkUnhealthy, match="gave up after 5s"):
        runner.stop()

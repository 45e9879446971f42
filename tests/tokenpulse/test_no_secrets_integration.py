"""A whole run (simulator -> ``tokenpulse probe`` -> ``tokenpulse worker`` -> ``tokenpulse sink`` -> a webhook)
with a fake provider API key and a webhook URL holding a secret: neither may appear in any file, log or topic
of the run, nor in InfluxDB. Real Kafka, real influxd, real HTTP."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer

from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from tokenpulse.streams.cli import worker_argv
from tokenpulse.testing.receivers import RecordingReceiver
from tokenpulse.testing.sinks import wait_until
from tokenpulse.testing.streams import WorkerProcess

pytestmark = pytest.mark.integration


def _topic_bytes(bootstrap: str, prefix: str) -> tuple[int, bytes]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topics = sorted(t for t in admin.list_topics() if t.startswith(prefix + "."))
    finally:
        admin.close()
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=3000,
    )
    chunks, count = [], 0
    try:
        for record in consumer:
            count += 1
            chunks += [record.key or b"", record.value or b""]
            chunks += [name.encode() + value for name, value in record.headers or []]
    finally:
        consumer.close()
    return count, b"\n".join(chunks)


def test_no_api_key_or_webhook_secret_anywhere(kafka_bootstrap, influx, topic_prefix, tmp_path: Path) -> None:
    api_key = "sk-fake-" + secrets.token_hex(16)
    webhook_secret = "hook-secret-" + secrets.token_hex(12)
    webhook = RecordingReceiver()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    env.update(
        TOKENPULSE_HOME=str(run_dir / "home"),
        TOKENPULSE_DATA_DIR=str(run_dir / "data"),
        TOKENPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_INFLUX_URL=influx.url,
        TOKENPULSE_INFLUX_TOKEN=influx.token,
        TOKENPULSE_INFLUX_ORG=influx.org,
        TOKENPULSE_INFLUX_BUCKET=influx.bucket,
        SIM_API_KEY=api_key,
    )
    secret_inputs = tmp_path / "secret-inputs"  # what the operator provides, outside the run's directory
    secret_inputs.mkdir()
    webhook_file = secret_inputs / "webhook.url"
    webhook_file.write_text(f"{webhook.url}/hooks/{webhook_secret}\n")
    rules = run_dir / "rules.yaml"
    rules.write_text(
        yaml.safe_dump({"rules": [{"name": "any-ttft", "kind": "threshold", "metric": "ttft_p95_ms", "above": 0.001}]})
    )
    config = SimulatorConfig(endpoints={"fast": LatencyProfile(ttft_ms=20, ttft_p95_ms=40, tokens_per_s=1000)})
    with SimulatorProcess(config) as sim:
        workload = run_dir / "workload.yaml"
        workload.write_text(
            yaml.safe_dump(
                {
                    "name": "secrets",
                    "requests": 60,
                    "schedule": {"kind": "closed", "concurrency": 4},
                    "prompts": {"synthetic": {"count": 5, "input_tokens": 30, "output_tokens": 12}},
                    "endpoints": [
                        {
                            "name": "fast",
                            "kind": "openai",
                            "provider": "simulator",
                            "base_url": sim.endpoint_url("fast"),
                            "model": "sim-fast",
                            "region": "local",
                            "api_key_env": "SIM_API_KEY",
                        }
                    ],
                }
            )
        )
        sink_log = open(run_dir / "sink.log", "wb")  # noqa: SIM115 - closed below
        sink = subprocess.Popen(
            [sys.executable, "-m", "tokenpulse", "sink", "--rules", str(rules), "--webhook-file", str(webhook_file)],
            env=env,
            stdout=sink_log,
            stderr=sink_log,
        )
        worker = WorkerProcess(worker_argv(windows=("10s",), grace="1s", idle_close_s=3.0), env, run_dir / "worker.log")
        try:
            with worker:
                probe = subprocess.run(
                    [sys.executable, "-m", "tokenpulse", "probe", "-w", str(workload), "--no-live"],
                    env=env,
                    capture_output=True,
                    timeout=300,
                )
                (run_dir / "probe.log").write_bytes(probe.stdout + probe.stderr)
                assert probe.returncode == 0, (probe.stdout + probe.stderr)[-2000:]
                wait_until(lambda: len(webhook.bodies) >= 1, 120, "the alert at the webhook")
        finally:
            sink.terminate()
            sink.wait(30)
            sink_log.close()
            webhook.stop()
    assert webhook.bodies[0][0] == f"/hooks/{webhook_secret}"  # the secret URL was used, only never shown

    secrets_to_find = {"API key": api_key.encode(), "webhook secret": webhook_secret.encode()}
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "sink.log" for p in files) and any("spool" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        for what, secret in secrets_to_find.items():
            assert secret not in data, f"{what} found in {path}"
    count, topic_data = _topic_bytes(kafka_bootstrap, topic_prefix)
    assert count > 60
    for what, secret in secrets_to_find.items():
        assert secret not in topic_data, f"{what} found on a topic of {topic_prefix}"
    with influx.client() as client:
        csv = client.query_api().query_raw(f'from(bucket: "{influx.bucket}") |> range(start: 0)').data
    assert b"llm_request" in csv
    for what, secret in secrets_to_find.items():
        assert secret not in csv, f"{what} found in InfluxDB"
    print(f"secret scan: {len(files)} files, {count} records on the run's topics, InfluxDB bucket: none found")

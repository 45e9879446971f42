"""The Kafka security settings against a real broker with a SASL_SSL listener (generated CA, SCRAM user).

The whole pipeline runs over SASL_SSL: the probe's publisher (kafka-python) -> ``tokenpulse worker``
(faust) -> the sink runner (aiokafka; kafka-python for topic creation) -> InfluxDB. A wrong password gives
one clear error line and a non-zero exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tokenpulse.config import default_cache
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig
from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.streams.cli import worker_argv
from tokenpulse.testing.secure_kafka import SaslSslKafka
from tokenpulse.testing.sinks import flux_count, wait_until
from tokenpulse.testing.streams import DEFAULT_START_NS, HISTORICAL_MAX_AGE, TimingFactory, TimingKey, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslSslKafka]:
    broker = SaslSslKafka(tmp_path_factory.mktemp("sasl-kafka"), default_cache())
    try:
        broker.start()
    except Exception as exc:
        broker.stop()
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and the SASL_SSL broker could not start: {exc}", pytrace=False)
        pytest.skip(f"SASL_SSL broker unavailable (not CI): {exc}")
    yield broker
    broker.stop()


def _security_env(broker: SaslSslKafka, password: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_KAFKA")}
    env.update(
        TOKENPULSE_KAFKA_BOOTSTRAP=broker.bootstrap,
        TOKENPULSE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        TOKENPULSE_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        TOKENPULSE_KAFKA_SASL_USERNAME=broker.username,
        TOKENPULSE_KAFKA_SASL_PASSWORD=password if password is not None else broker.password,
        TOKENPULSE_KAFKA_SSL_CAFILE=str(broker.ca_file),
    )
    return env


def test_pipeline_over_sasl_ssl_with_all_three_clients(sasl_kafka, influx, topic_prefix, tmp_path) -> None:
    settings = sasl_kafka.settings(
        topic_prefix=topic_prefix,
        influx_url=influx.url.rstrip("/"),
        influx_token=influx.token,
        influx_org=influx.org,
        influx_bucket=influx.bucket,
    )
    topics = settings.topics
    # kafka-python: the probe's own publisher (it creates the topic, then sends).
    publisher = KafkaPublisher(
        PublisherConfig(
            bootstrap=settings.kafka_bootstrap,
            topic=topics.request_timings,
            spool_path=tmp_path / "spool" / "probe.jsonl",
            partitions=2,
            kafka_options=settings.kafka_client_options(),
        )
    )
    factory = TimingFactory(seed=3, error_rate=0.0)
    events = list(factory.stream([TimingKey("sim-a", "m-1")], 200, start_ns=DEFAULT_START_NS, interval_ns=10**9))
    for event in events:
        publisher.publish(event)
    stats = publisher.close(timeout_s=30)
    assert (stats.delivered, stats.pending_in_spool) == (len(events), 0)

    # faust: the worker, configured from the environment like a deployment.
    env = _security_env(sasl_kafka) | {
        "TOKENPULSE_TOPIC_PREFIX": topic_prefix,
        "TOKENPULSE_DATA_DIR": str(tmp_path / "data"),
    }
    worker = WorkerProcess(
        worker_argv(windows=("1m",), grace="1s", partitions=2, max_event_age=HISTORICAL_MAX_AGE),
        env,
        tmp_path / "worker.log",
    )
    # aiokafka: the sink runner writes the windows to InfluxDB.
    runner = SinkRunner(settings, sinks=("llm_window",))
    with worker:
        runner.start()
        try:
            with influx.client() as client:
                wait_until(
                    lambda: flux_count(client, influx.bucket, "llm_window", "count") >= 2,
                    180,
                    "windows from the worker in InfluxDB, over SASL_SSL",
                )
        finally:
            runner.stop()
    assert runner.kafka_sinks[0].stats.written >= 2
    assert sasl_kafka.password not in (tmp_path / "worker.log").read_text()


def test_wrong_password_gives_one_clear_error_line(sasl_kafka, influx, topic_prefix, tmp_path) -> None:
    wrong = "not-the-password-4d1c"
    env = _security_env(sasl_kafka, password=wrong) | {
        "TOKENPULSE_TOPIC_PREFIX": topic_prefix,
        "TOKENPULSE_HOME": str(tmp_path / "home"),
        "TOKENPULSE_INFLUX_URL": influx.url,
        "TOKENPULSE_INFLUX_TOKEN": influx.token,
        "COLUMNS": "300",
    }
    result = subprocess.run(
        [sys.executable, "-m", "tokenpulse", "sink"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    assert wrong not in output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, output
    [line] = errors
    assert line.startswith("error: Kafka at 127.0.0.1:") and "refused SASL SCRAM-SHA-512" in line
    assert "TOKENPULSE_KAFKA_SASL_PASSWORD" in line
    print("SASL_SSL wrong password:", line)

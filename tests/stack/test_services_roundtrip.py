"""The real services answer the clients tokenpulse uses: kafka-python, aiokafka, faust, influxdb-client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from tokenpulse.testing import InfluxEndpoint

pytestmark = pytest.mark.integration

N_MESSAGES = 10_000


def _create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def test_kafka_python_to_aiokafka_10k(kafka_bootstrap: str, topic_name) -> None:
    from aiokafka import AIOKafkaConsumer

    topic = topic_name("roundtrip")
    _create_topic(kafka_bootstrap, topic)
    sent = {f"key-{i}".encode(): f"value-{i}-{'x' * (i % 50)}".encode() for i in range(N_MESSAGES)}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5, compression_type="gzip")
    for key, value in sent.items():
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    async def consume_all() -> dict[bytes, bytes]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        received: dict[bytes, bytes] = {}
        try:
            deadline = time.monotonic() + 60
            while len(received) < N_MESSAGES and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for records in batches.values():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        received[record.key] = record.value
        finally:
            await consumer.stop()
        return received

    received = asyncio.run(consume_all())
    assert len(received) == N_MESSAGES
    assert received == sent


FAUST_APP = textwrap.dedent(
    """
    import os
    import faust

    app = faust.App(
        os.environ["APP_ID"],
        broker="kafka://" + os.environ["BOOTSTRAP"],
        store="memory://",
        topic_partitions=1,
        topic_replication_factor=1,
        broker_session_timeout=10,
        web_enabled=False,
    )
    source = app.topic(os.environ["SOURCE"], value_serializer="raw")
    sink = app.topic(os.environ["SINK"], value_serializer="raw")
    counts = app.Table("counts", default=int, partitions=1)

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            word = value.decode()
            counts[word] += 1
            await sink.send(value=f"{word}={counts[word]}".encode())

    if __name__ == "__main__":
        app.main()
    """
)


def test_minimal_faust_app_updates_a_table(kafka_bootstrap: str, topic_name, tmp_path: Path) -> None:
    source, sink, app_id = topic_name("faust-in"), topic_name("faust-out"), topic_name("faust-app")
    _create_topic(kafka_bootstrap, source, partitions=1)
    _create_topic(kafka_bootstrap, sink, partitions=1)
    app_file = tmp_path / "counter_app.py"
    app_file.write_text(FAUST_APP)
    words = ["alpha"] * 30 + ["beta"] * 20
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for word in words:
        producer.send(source, word.encode())
    producer.flush()
    producer.close()

    env = dict(os.environ, APP_ID=app_id, BOOTSTRAP=kafka_bootstrap, SOURCE=source, SINK=sink)
    worker = subprocess.Popen(
        [sys.executable, str(app_file), "worker", "-l", "warn", "--without-web"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        consumer = KafkaConsumer(sink, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        final: dict[str, int] = {}
        seen = 0
        deadline = time.monotonic() + 90
        while seen < len(words) and time.monotonic() < deadline and worker.poll() is None:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    word, count = record.value.decode().split("=")
                    final[word] = int(count)
                    seen += 1
        consumer.close()
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert seen == len(words), output.decode(errors="replace")[-2000:]
    assert final == {"alpha": 30, "beta": 20}
    # The table is changelog-backed: its changelog topic exists on the broker with our updates.
    changelog = f"{app_id}-counts-changelog"
    check = KafkaConsumer(
        changelog, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    latest = {record.key: record.value for record in check}
    check.close()
    assert len(latest) == 2


def test_influxdb_client_10k_points_roundtrip(influx: InfluxEndpoint) -> None:
    from influxdb_client.client.write_api import SYNCHRONOUS

    base_ns = 1_780_000_000_000_000_000
    lines = [
        f"roundtrip,host=h{i % 7},series=s{i % 3} value={i * 0.5},count={i}i {base_ns + i * 1_000_000}"
        for i in range(N_MESSAGES)
    ]
    with influx.client(timeout=60_000) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        for start in range(0, len(lines), 5000):
            write.write(bucket=influx.bucket, record=lines[start : start + 5000], write_precision="ns")
        query = f"""
            from(bucket: "{influx.bucket}")
              |> range(start: 2026-01-01T00:00:00Z, stop: 2027-01-01T00:00:00Z)
              |> filter(fn: (r) => r._measurement == "roundtrip")
              |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
              |> group()
        """
        tables = client.query_api().query(query, org=influx.org)
    rows = {
        int(record.values["count"]): (record.values["value"], record.values["host"], record.values["series"])
        for table in tables
        for record in table.records
    }
    assert len(rows) == N_MESSAGES
    assert rows == {i: (i * 0.5, f"h{i % 7}", f"s{i % 3}") for i in range(N_MESSAGES)}

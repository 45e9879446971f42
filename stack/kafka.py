"""Apache Kafka as a local process: jars from Maven Central, single-node KRaft, loopback only."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tokenpulse.private_files import private_dir, write_private
from tokenpulse.stack.errors import StackError
from tokenpulse.stack.process import ServiceProcess

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"  # Kafka 4.0/4.1's own log4j2 version
POM = Path(__file__).parent / "kafka" / "pom.xml"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"

_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: WARN
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


def java_major_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise StackError(f"could not read the Java version from `{java} -version`: {out.strip()[:200]}")
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("Java 17+ is missing: Kafka needs it (`apt-get install openjdk-17-jre-headless`)")
    if java_major_version(java) < 17:
        raise StackError("Kafka 4 needs Java 17 or newer: install `openjdk-17-jre-headless` and put it first on PATH")
    return java


def ensure_kafka_jars(cache: Path, version: str = KAFKA_VERSION, log4j_version: str = LOG4J_VERSION) -> Path:
    """Resolve the broker's jars into ``cache/kafka/<version>/libs`` (once); return that folder."""
    libs = cache / "kafka" / version / "libs"
    if (libs / f"kafka_2.13-{version}.jar").exists() and (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven is missing: it fetches Kafka's jars from Maven Central (`apt-get install maven`)")
    tmp = libs.with_name("libs.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dmaven.repo.local={cache / 'm2'}",
        f"-Dkafka.version={version}",
        f"-Dlog4j.version={log4j_version}",
        f"-Dtokenpulse.libdir={tmp}",
        DEPENDENCY_PLUGIN,
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise StackError(f"Maven could not resolve Kafka {version} jars: {' | '.join(detail)}")
    (tmp / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


@dataclass(frozen=True)
class KafkaConfig:
    data_dir: Path
    port: int
    controller_port: int
    version: str = KAFKA_VERSION
    heap: str = "512M"
    extra_properties: tuple[str, ...] = ()
    """``key=value`` lines after the defaults (a later key wins), e.g. a SASL_SSL listener."""
    format_args: tuple[str, ...] = ()
    """Extra ``StorageTool format`` arguments, e.g. ``--add-scram`` to create SCRAM users."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def server_properties(cfg: KafkaConfig) -> str:
    """A single combined broker+controller node with a static voter, reachable on loopback only."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cfg.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{cfg.port},CONTROLLER://127.0.0.1:{cfg.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={cfg.data_dir / 'logs'}",
            "num.partitions=1",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "log.segment.bytes=67108864",
            *cfg.extra_properties,
            "",
        ]
    )


class KafkaBroker:
    """Format (first start only), run and stop one broker whose files live in ``cfg.data_dir``."""

    def __init__(self, cfg: KafkaConfig, libs: Path, java: str) -> None:
        self.cfg = cfg
        self.libs = libs
        self.java = java
        self.process = ServiceProcess("kafka", cfg.data_dir, marker=str(cfg.data_dir))

    def _java(self, main: str, *args: str, heap: str = "256M") -> list[str]:
        return [
            self.java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.cfg.data_dir / 'log4j2.yaml'}",
            f"-Dtokenpulse.home={self.cfg.data_dir}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def prepare(self) -> None:
        """Write the config and format the storage with a fresh cluster id, once per data dir."""
        d = self.cfg.data_dir
        private_dir(d)  # the broker's logs hold the events
        (d / "log4j2.yaml").write_text(_LOG4J2)
        props = d / "server.properties"
        write_private(props, server_properties(self.cfg))  # may hold listener secrets
        if (d / "logs" / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "-g", *self.cfg.format_args
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-2:]
            raise StackError(f"formatting Kafka storage in {d} failed: {' | '.join(tail)}")

    def start(self) -> int:
        self.prepare()
        argv = self._java("kafka.Kafka", str(self.cfg.data_dir / "server.properties"), heap=self.cfg.heap)
        return self.process.start(argv)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Wait until a client can create a topic, produce to it and consume from it."""
        deadline = time.monotonic() + timeout_s
        last_error = "no answer"
        while time.monotonic() < deadline:
            code = self.process.exited_early()
            if code is not None:
                raise StackError(
                    f"Kafka exited with code {code} while starting; log {self.process.log_file}:\n"
                    + self.process.log_tail()
                )
            try:
                roundtrip_check(self.cfg.bootstrap, timeout_s=10)
                return
            except Exception as exc:  # any client error means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5)
        raise StackError(f"Kafka on {self.cfg.bootstrap} not ready after {timeout_s:.0f}s ({last_error})")


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as StorageTool makes).

    Like Kafka's ``Uuid.randomUuid``, never one that starts with ``-`` (1 in 64 would): StorageTool's
    argument parser takes ``-t -abc...`` for an option and fails with "expected one argument".
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def roundtrip_check(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Create a health topic if needed, produce one record and read it back; raise on failure."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topic = "__tokenpulse_health"
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    token = uuid.uuid4().bytes
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=timeout_ms)
    try:
        meta = producer.send(topic, token).get(timeout=timeout_s)
    finally:
        producer.close()
    # A group commit as well: it makes the broker create __consumer_offsets, so "ready" also means that
    # consumer groups (faust, the sinks) find their coordinator at once.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=topic, enable_auto_commit=False, consumer_timeout_ms=timeout_ms
    )
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        for record in consumer:
            if record.value == token:
                consumer.commit()
                return
        raise TimeoutError("produced health record was not read back")
    finally:
        consumer.close()

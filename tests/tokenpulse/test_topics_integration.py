"""The request-timings topic gets its partitions from tokenpulse, whether the probe or the worker starts first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from tokenpulse.config import Settings
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig
from tokenpulse.streams.app import WorkerConfig, source_partitions
from tokenpulse.testing.sinks import make_timing
from tokenpulse.topics import ensure_topic, ensure_topics

pytestmark = pytest.mark.integration


def partitions_of(bootstrap: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (description,) = admin.describe_topics([topic])
        return len(description["partitions"])
    finally:
        admin.close()


def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def test_the_probe_publisher_creates_its_topic_with_the_configured_partitions(
    kafka_bootstrap: str, topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = topic_name("timings")
    publisher = KafkaPublisher(PublisherConfig(kafka_bootstrap, topic, tmp_path / "spool.sqlite", partitions=4))
    publisher.publish(make_timing())
    publisher.drain(30)
    stats = publisher.close()
    assert stats.delivered == 1
    assert partitions_of(kafka_bootstrap, topic) == 4  # not the broker's num.partitions (1)


def test_an_existing_topic_is_left_as_it_is(kafka_bootstrap: str, topic_name: Callable[[str], str]) -> None:
    topic = topic_name("timings")
    create(kafka_bootstrap, topic, 2)
    assert ensure_topic(kafka_bootstrap, topic, 6) == 2
    assert partitions_of(kafka_bootstrap, topic) == 2


def test_the_worker_follows_the_topic_and_warns_when_it_has_fewer_partitions_than_asked(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.model_validate(
        {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix, "data_dir": tmp_path}
    )
    topic = settings.topics.request_timings
    create(kafka_bootstrap, topic, 1)  # as a broker's auto-create would have made it
    with caplog.at_level(logging.WARNING, logger="tokenpulse.worker"):
        assert source_partitions(settings, WorkerConfig(partitions=6)) == 1
    assert f"topic {topic} has 1 partition, fewer than --partitions 6" in caplog.text

    other = settings.model_copy(update={"topic_prefix": topic_prefix + "-new"})
    assert source_partitions(other, WorkerConfig(partitions=3)) == 3  # missing: created as asked
    assert partitions_of(kafka_bootstrap, other.topics.request_timings) == 3
    assert source_partitions(other, WorkerConfig(partitions=2)) == 3  # more than asked: the worker follows


def test_several_topics_at_once_create_only_the_missing_ones(
    kafka_bootstrap: str, topic_name: Callable[[str], str]
) -> None:
    old, new = topic_name("old"), topic_name("new")
    create(kafka_bootstrap, old, 2)
    assert ensure_topics(kafka_bootstrap, {old: 6, new: 3}) == {old: 2, new: 3}


def test_the_worker_reads_the_brokers_default_replication_factor(kafka_bootstrap: str) -> None:
    from tokenpulse.topics import broker_default_replication

    assert broker_default_replication(kafka_bootstrap) == 1  # the single-node test broker's default
    assert broker_default_replication("127.0.0.1:1", request_timeout_ms=500) == 1  # unreachable: 1, logged

"""Creating tokenpulse's topics with enough partitions, whichever of probe, worker and sink starts first.

A broker that auto-creates topics gives them its ``num.partitions`` (1 by default). If the probe's first
send created ``request-timings`` that way, only one worker could ever get events: the topic's partitions
are the most workers that can share the load. So the probe, the worker and the sink runner all create
their topics explicitly, with the same counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

REQUEST_TIMINGS_PARTITIONS = 6
"""Partitions of the request-timings topic (``tokenpulse worker --partitions``): at most this many workers."""


def ensure_topics(
    bootstrap: str,
    partitions_by_topic: Mapping[str, int],
    *,
    request_timeout_ms: int = 10_000,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Create each missing topic with its partitions (and the broker's default replication) and its
    ``configs`` (e.g. ``cleanup.policy: compact``); return how many partitions each one has. Existing topics
    are left as they are. ``client_options`` are kafka-python's security settings
    (``Settings.kafka_python_options()``). Raises kafka-python's errors: a broker that cannot be reached
    within ``request_timeout_ms`` (``KafkaTimeoutError``), not authorized, ..."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="tokenpulse-topics",
        request_timeout_ms=request_timeout_ms,
        bootstrap_timeout_ms=request_timeout_ms,
        **dict(client_options or {}),
    )
    try:
        existing = set(admin.list_topics())
        for topic, partitions in partitions_by_topic.items():
            if topic in existing:
                continue
            try:
                topic_configs = dict((configs or {}).get(topic, {}))
                admin.create_topics(
                    [NewTopic(topic, num_partitions=partitions, replication_factor=-1, topic_configs=topic_configs)]
                )
                log.info("created topic %s with %d partitions", topic, partitions)
            except TopicAlreadyExistsError:
                pass  # another process created it in between
        return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(partitions_by_topic))}
    finally:
        admin.close()


def ensure_topic(bootstrap: str, topic: str, partitions: int, *, request_timeout_ms: int = 10_000) -> int:
    """``ensure_topics`` for one topic: its partition count."""
    return ensure_topics(bootstrap, {topic: partitions}, request_timeout_ms=request_timeout_ms)[topic]


def too_few_partitions(topic: str, found: int, wanted: int) -> str | None:
    """The warning for a request-timings topic with fewer partitions than the worker expects, or ``None``."""
    if found >= wanted:
        return None
    return (
        f"topic {topic} has {found} partition{'s' if found != 1 else ''}, fewer than --partitions {wanted}: at "
        f"most {found} worker{'s' if found != 1 else ''} will get events (a broker's auto-create gives its "
        f"num.partitions). Events are keyed by provider/model, so add partitions only while the topic is "
        f"empty: kafka-topics.sh --alter --topic {topic} --partitions {wanted}"
    )

"""Creating tokenpulse's topics with enough partitions, whichever of probe, worker and sink starts first.

A broker that auto-creates topics gives them its ``num.partitions`` (1 by default). If the probe's first
send created ``request-timings`` that way, only one worker could ever get events: the topic's partitions
are the most workers that can share the load. So the probe, the worker and the sink runner all create
their topics explicitly, with the same counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

REQUEST_TIMINGS_PARTITIONS = 6
"""Partitions of the request-timings topic (``tokenpulse worker --partitions``): at most this many workers."""


def ensure_topics(
    bootstrap: str, partitions_by_topic: Mapping[str, int], *, request_timeout_ms: int = 10_000
) -> dict[str, int]:
    """Create each missing topic with its partitions (and the broker's default replication); return how
    many partitions each one has. Existing topics are left as they are. Raises kafka-python's errors: a
    broker that cannot be reached within ``request_timeout_ms`` (``KafkaTimeoutError``), not authorized, ..."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="tokenpulse-topics",
        request_timeout_ms=request_timeout_ms,
        bootstrap_timeout_ms=request_timeout_ms,
    )
    try:
        existing = set(admin.list_topics())
        for topic, partitions in partitions_by_topic.items():
            if topic in existing:
                continue
            try:
                admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])
                log.info("created topic %s with %d partitions", topic, partitions)
            except TopicAlreadyExistsError:
                pass  # another process created it in between
        return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(partitions_by_topic))}
    finally:
        admin.close()


def broker_default_replication(bootstrap: str, *, request_timeout_ms: int = 10_000) -> int:
    """The broker's ``default.replication.factor`` (what topics created with -1 get); 1 if it cannot be read.

    faust wants a number for the topics it creates (the worker's changelog), so the worker asks for this one.
    """
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id="tokenpulse-topics",
            request_timeout_ms=request_timeout_ms,
            bootstrap_timeout_ms=request_timeout_ms,
        )
    except Exception as exc:  # kafka-python's errors; faust reports an absent broker itself
        log.warning("could not read the broker's default.replication.factor (%s); using 1", type(exc).__name__)
        return 1
    try:
        broker_id = str(admin.describe_cluster()["brokers"][0]["broker_id"])  # any: the default is cluster-wide
        resource = ConfigResource(ConfigResourceType.BROKER, broker_id, configs=["default.replication.factor"])
        found = admin.describe_configs([resource], config_filter="all")["broker"][broker_id]
        return max(1, int(found["default.replication.factor"]["value"]))
    except Exception as exc:
        log.warning("could not read the broker's default.replication.factor (%s); using 1", type(exc).__name__)
    finally:
        admin.close()
    return 1


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

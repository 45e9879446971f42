"""Creating tokenpulse's topics with enough partitions, whichever of probe, worker and sink starts first.

A broker that auto-creates topics gives them its ``num.partitions`` (1 by default). If the probe's first
send created ``request-timings`` that way, only one worker could ever get events: the topic's partitions
are the most workers that can share the load. So the probe, the worker and the sink runner all create
their topics explicitly, with the same counts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from tokenpulse.errors import TokenpulseError

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
    options = dict(client_options or {})
    with _connection_problems(bootstrap, options):
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id="tokenpulse-topics",
            request_timeout_ms=request_timeout_ms,
            bootstrap_timeout_ms=request_timeout_ms,
            **options,
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


class KafkaAccessError(TokenpulseError):
    """The brokers answered but refused the client: wrong SASL credentials, an untrusted certificate, ..."""


class _BufferedRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _connection_problems(bootstrap: str, options: Mapping[str, Any]) -> Iterator[None]:
    """Turn a bootstrap that fails because the broker refused the credentials or the certificate into one
    ``KafkaAccessError`` naming the fix. kafka-python only logs those causes (a line per retry) and then
    raises a bare timeout, so its log lines are held back meanwhile and replayed for any other failure."""
    kafka_log = logging.getLogger("kafka")
    buffer, propagate = _BufferedRecords(), kafka_log.propagate
    level, shown = kafka_log.level, kafka_log.getEffectiveLevel()
    kafka_log.addHandler(buffer)
    kafka_log.propagate = False
    kafka_log.setLevel(logging.DEBUG)  # the SASL failure is sometimes only logged at debug level
    try:
        yield
    except KafkaError as exc:
        records = list(buffer.records)
        buffer.records.clear()  # explained by one of the errors below, or replayed before re-raising
        text = " ".join(record.getMessage() for record in records)
        user, mechanism = options.get("sasl_plain_username"), options.get("sasl_mechanism")
        if "UnsupportedSaslMechanism" in text or "IllegalSaslState" in text:
            raise KafkaAccessError(
                f"Kafka at {bootstrap} does not accept SASL mechanism {mechanism}; set "
                "TOKENPULSE_KAFKA_SASL_MECHANISM to one the listener enables"
            ) from None
        # The broker answers a failed SASL authentication with an error and then closes the connection; under
        # load kafka-python may see only the close. A close right after a completed ApiVersions exchange (the
        # broker was reached, TLS worked) on a SASL listener is that same refusal.
        refused = "SaslAuthenticationFailed" in text or "Authentication failed" in text
        closed_in_sasl = mechanism is not None and "Broker version identified" in text and "disconnected" in text
        if refused or closed_in_sasl:
            raise KafkaAccessError(
                f"Kafka at {bootstrap} refused SASL {mechanism} authentication of user {user!r} (invalid "
                "credentials, or a mechanism the listener does not enable): fix TOKENPULSE_KAFKA_SASL_USERNAME / "
                "TOKENPULSE_KAFKA_SASL_PASSWORD (or TOKENPULSE_KAFKA_SASL_MECHANISM), or create the user"
            ) from None
        if "CERTIFICATE_VERIFY_FAILED" in text:
            raise KafkaAccessError(
                f"Kafka at {bootstrap}: its TLS certificate is not trusted; set TOKENPULSE_KAFKA_SSL_CAFILE to "
                "the CA bundle that signed it"
            ) from None
        _replay(records, propagate, shown)
        raise exc
    finally:
        kafka_log.removeHandler(buffer)
        kafka_log.propagate = propagate
        kafka_log.setLevel(level)
        _replay(buffer.records, propagate, max(shown, logging.WARNING))


def _replay(records: list[logging.LogRecord], propagate: bool, min_level: int) -> None:
    if not propagate:
        return
    for record in records:
        if record.levelno >= min_level and logging.getLogger().isEnabledFor(record.levelno):
            logging.getLogger().handle(record)


def broker_default_replication(
    bootstrap: str, *, request_timeout_ms: int = 10_000, client_options: Mapping[str, Any] | None = None
) -> int:
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
            **dict(client_options or {}),
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


def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    request_timeout_ms: int = 10_000,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """``ensure_topics`` for one topic: its partition count."""
    found = ensure_topics(
        bootstrap, {topic: partitions}, request_timeout_ms=request_timeout_ms, client_options=client_options
    )
    return found[topic]


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

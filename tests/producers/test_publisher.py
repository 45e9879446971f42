"""The publisher's write-ahead path with a stand-in producer: ack, reject, outage, full, unwritable, replay."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from kafka.errors import MessageSizeTooLargeError

from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig
from tokenpulse.producers.spool import Spool, SpoolError, SpoolFullError, SpoolLockedError
from tokenpulse.schemas import RequestTiming, decode
from tokenpulse.testing.producers import FakeProducer
from tokenpulse.testing.sinks import make_timing


def config(tmp_path: Path, **overrides: object) -> PublisherConfig:
    return PublisherConfig(
        bootstrap="127.0.0.1:1",
        topic="t.request-timings",
        spool_path=tmp_path / "p.sqlite",
        retry_interval_s=0.05,
        **overrides,  # type: ignore[arg-type]
    )


def wait_until(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)
    assert condition(), "condition not met in time"  # type: ignore[operator]


def ids(values: list[bytes]) -> list[str]:
    return [str(decode(RequestTiming, v).event_id) for v in values]


def test_every_event_is_delivered_once_in_order_and_leaves_the_spool(tmp_path: Path) -> None:
    producer = FakeProducer()
    publisher = KafkaPublisher(config(tmp_path), lambda _: producer)
    events = [make_timing() for _ in range(500)]
    for event in events:
        publisher.publish(event)
    assert publisher.drain(10)
    stats = publisher.close()
    assert ids(producer.acked) == [str(e.event_id) for e in events]
    assert stats.published == stats.delivered == 500 and stats.pending_in_spool == 0 and stats.dead_lettered == 0


def test_a_record_the_broker_refuses_goes_to_the_dead_letter_file_and_the_rest_go_on(tmp_path: Path) -> None:
    events = [make_timing() for _ in range(20)]
    refused = str(events[5].event_id).encode()
    producer = FakeProducer(reject=lambda v: MessageSizeTooLargeError("too large") if refused in v else None)
    publisher = KafkaPublisher(config(tmp_path), lambda _: producer)
    for event in events:
        publisher.publish(event)
    assert publisher.drain(10)
    stats = publisher.close()
    assert ids(producer.acked) == [str(e.event_id) for i, e in enumerate(events) if i != 5]
    assert stats.dead_lettered == 1 and stats.pending_in_spool == 0
    (line,) = (tmp_path / "p.sqlite.dead-letter.jsonl").read_bytes().splitlines()
    row = orjson.loads(line)
    assert row["reason"].startswith("MessageSizeTooLargeError") and refused.decode() in row["value"]


def test_an_outage_keeps_events_in_the_spool_and_each_is_delivered_once_after_it(tmp_path: Path) -> None:
    producer = FakeProducer()
    publisher = KafkaPublisher(config(tmp_path), lambda _: producer)
    wait_until(lambda: publisher.connected)
    events = [make_timing() for _ in range(300)]
    for event in events[:100]:
        publisher.publish(event)
    wait_until(lambda: len(producer.acked) == 100)
    producer.away = True
    for event in events[100:200]:
        publisher.publish(event)
    wait_until(lambda: publisher.spool.pending_count() == 100 and publisher.stats.send_failures > 0)
    producer.away = False
    for event in events[200:]:
        publisher.publish(event)
    assert publisher.drain(10)
    stats = publisher.close()
    assert ids(producer.acked) == [str(e.event_id) for e in events]  # no duplicate, no gap, in order
    assert stats.delivered == 300 and stats.replayed >= 100 and stats.pending_in_spool == 0


def test_a_full_spool_refuses_the_event_with_a_clear_error(tmp_path: Path) -> None:
    publisher = KafkaPublisher(config(tmp_path, spool_max_bytes=5_000), lambda _: (_ for _ in ()).throw(OSError()))
    published = 0
    with pytest.raises(SpoolFullError, match="raise spool_max_bytes"):
        for _ in range(100):
            publisher.publish(make_timing())
            published += 1
    stats = publisher.close()
    assert 0 < published < 100 and stats.refused == 1 and stats.pending_in_spool == published


def test_an_unwritable_spool_is_surfaced_and_close_hands_the_events_to_kafka(tmp_path: Path) -> None:
    producer = FakeProducer()
    producer.away = True  # nothing acknowledged while the disk is full, so the spool must hold them
    publisher = KafkaPublisher(config(tmp_path), lambda _: producer)
    publisher.publish(make_timing())
    wait_until(lambda: publisher.spool.pending_count() == 1)
    pages = publisher.spool._db.execute("PRAGMA page_count").fetchone()[0]
    publisher.spool._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's "database or disk is full"
    for _ in range(20):
        publisher.publish(make_timing())
    wait_until(lambda: publisher._failure is not None)
    with pytest.raises(SpoolError, match="cannot write to the spool"):
        publisher.publish(make_timing())
    producer.away = False
    stats = publisher.close(timeout_s=1.0)
    # The 20 waited in memory; close handed them to Kafka, so none is lost; the 22nd was refused, not taken.
    assert stats.published == 21 and stats.refused == 1 and stats.unsaved == 0 and len(set(producer.acked)) == 21


def test_a_restart_replays_the_previous_runs_events_first(tmp_path: Path) -> None:
    old = [make_timing() for _ in range(50)]
    first = KafkaPublisher(config(tmp_path), lambda _: (_ for _ in ()).throw(OSError("no broker")))
    for event in old:
        first.publish(event)
    assert first.close(timeout_s=0.5).pending_in_spool == 50
    producer = FakeProducer()
    second = KafkaPublisher(config(tmp_path), lambda _: producer)
    new = make_timing()
    second.publish(new)
    assert second.drain(10)
    stats = second.close()
    assert ids(producer.acked) == [str(e.event_id) for e in [*old, new]] and stats.replayed == 50


def test_two_publishers_cannot_share_a_spool(tmp_path: Path) -> None:
    publisher = KafkaPublisher(config(tmp_path), lambda _: FakeProducer())
    with pytest.raises(SpoolLockedError):
        KafkaPublisher(config(tmp_path), lambda _: FakeProducer())
    publisher.close()
    Spool(tmp_path / "p.sqlite").close()

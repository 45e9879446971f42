"""The probe end to end: simulator over real HTTP, real Kafka, events read back from the topic."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from tokenpulse.config import Settings
from tokenpulse.producers.probe import run_workload, run_workload_async
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from tokenpulse.producers.workload import Workload, parse_workload
from tokenpulse.schemas import RequestTiming, decode
from tokenpulse.testing import RestartableService

pytestmark = pytest.mark.integration


def sim_workload(base_url: str, requests: int, schedule: dict[str, object]) -> Workload:
    return parse_workload(
        {
            "name": "it",
            "requests": requests,
            "schedule": schedule,
            "warmup_requests": 4,
            "prompts": {"synthetic": {"count": 5, "input_tokens": 30, "output_tokens": 12}},
            "endpoints": [
                {
                    "name": "fast",
                    "kind": "openai",
                    "provider": "simulator",
                    "base_url": base_url,
                    "model": "sim-fast",
                    "region": "local",
                }
            ],
        }
    )


def consume(bootstrap: str, topic: str, expected: int, deadline_s: float = 60.0) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    values: list[bytes] = []
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                values.extend(record.value for record in records)
            if len(values) >= expected:
                # One more quiet poll: more than expected would be a defect too.
                for records in consumer.poll(timeout_ms=1500).values():
                    values.extend(record.value for record in records)
                break
    finally:
        consumer.close()
    return values


def test_200_requests_make_exactly_200_valid_events_matching_ground_truth(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    config = SimulatorConfig(endpoints={"fast": LatencyProfile(ttft_ms=20, ttft_p95_ms=40, tokens_per_s=1000)})
    settings = Settings.model_validate(
        {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix, "data_dir": tmp_path}
    )
    with SimulatorProcess(config) as sim:
        workload = sim_workload(sim.endpoint_url("fast"), 200, {"kind": "closed", "concurrency": 8})
        summary = run_workload(workload, settings, environ={})
        truth = sim.ground_truth()
    assert summary.requests == 200 and summary.errors == 0
    assert summary.publish is not None and summary.publish.delivered == 200 and summary.publish.spooled == 0

    values = consume(kafka_bootstrap, settings.topics.request_timings, 200)
    events = [decode(RequestTiming, value) for value in values]
    assert len(events) == 200 and len({e.event_id for e in events}) == 200
    errors_ms = []
    for event in events:
        assert event.status == "ok" and event.provider == "simulator" and event.workload == "it"
        true = truth[str(event.event_id)]
        assert event.completion_tokens == true["completion_tokens"] == 12
        assert event.ttft_ms is not None
        errors_ms.append(event.ttft_ms - true["ttft_ms"])
    # Both sides stamp with the kernel's receive times on the host's one monotonic clock: the probe stamps
    # "sent" before the simulator receives, and a chunk arrives after the simulator stamped it written, so
    # measured TTFT is never below the truth, but for the two wall-to-monotonic conversions (simulator
    # arrival, probe arrival), each within a microsecond or so (producers.kernel_time); 20 us leave room for
    # an interrupted reading. The 1 ms p99 target is measured by bench/probe_accuracy.py (a timed figure, so a
    # benchmark's). The median bound here is functional: it tells the first token's time (about 20 ms) from the
    # last one's (11 tokens, 11 ms later), and leaves room for a simulator descheduled between stamping a chunk
    # and writing it, which a loaded 2-core machine does (medians of 1.3-2.6 ms seen with the code before and
    # after this session's changes).
    assert min(errors_ms) > -0.020
    assert sorted(errors_ms)[len(errors_ms) // 2] < 5.0


def test_broker_outage_spools_and_replays_every_event(restartable_kafka: RestartableService, tmp_path: Path) -> None:
    topic = "outage.request-timings"
    publisher = KafkaPublisher(
        PublisherConfig(
            bootstrap=restartable_kafka.bootstrap,
            topic=topic,
            spool_path=tmp_path / "spool.sqlite",
            delivery_timeout_ms=3000,
            request_timeout_ms=1000,
            max_block_ms=2000,
            retry_interval_s=0.5,
        )
    )
    published: list[RequestTiming] = []
    config = SimulatorConfig(endpoints={"fast": LatencyProfile(ttft_ms=5, tokens_per_s=2000)})
    with SimulatorProcess(config) as sim:
        workload = sim_workload(sim.endpoint_url("fast"), 150, {"kind": "open", "rate_per_s": 15, "seed": 2})
        runner = threading.Thread(
            target=lambda: asyncio.run(run_workload_async(workload, publisher, api_keys={}, on_event=published.append))
        )
        runner.start()
        while len(published) < 25 and runner.is_alive():
            time.sleep(0.1)
        restartable_kafka.stop()
        runner.join(120)
    assert not runner.is_alive() and len(published) == 150
    deadline = time.monotonic() + 30
    while publisher.stats.spooled == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert publisher.stats.spooled > 0, "events produced during the outage must reach the spool"

    restartable_kafka.start()
    assert publisher.drain(120), f"spool not drained: {publisher.stats}"
    stats = publisher.close()
    assert stats.pending_in_spool == 0 and stats.replayed > 0

    values = consume(restartable_kafka.bootstrap, topic, 150, deadline_s=60)
    delivered = {decode(RequestTiming, value).event_id for value in values}
    assert delivered == {event.event_id for event in published}  # none lost (duplicates are allowed)

"""``python -m streams --metrics-port``: a real worker on a real broker serves its counters at /metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokenpulse.stack.process import free_port
from tokenpulse.streams.cli import worker_argv
from tokenpulse.testing.metrics import scrape_until
from tokenpulse.testing.streams import (
    HISTORICAL_MAX_AGE,
    TimingFactory,
    WorkerProcess,
    create_topics,
    default_keys,
    produce,
    timing_records,
)

pytestmark = pytest.mark.integration

S = 1_000_000_000
PARTITIONS = 2


def test_worker_serves_consumed_dead_letter_and_partition_counters(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    timings = f"{topic_prefix}.request-timings"
    create_topics(kafka_bootstrap, [timings, f"{topic_prefix}.window-stats", f"{timings}.dlq"], PARTITIONS)
    events = list(TimingFactory(seed=31).stream(default_keys(4), 300, interval_ns=S // 10))
    produced = produce(kafka_bootstrap, timings, [*timing_records(events), (b"bad/key", b"{not json")])
    assert produced == 301
    port = free_port()
    env = dict(
        os.environ,
        TOKENPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_DATA_DIR=str(tmp_path / "data"),
    )
    argv = worker_argv(
        windows=("1m",),
        grace="5s",
        partitions=PARTITIONS,
        idle_close_s=600.0,
        max_event_age=HISTORICAL_MAX_AGE,
        extra=("--metrics-port", str(port)),
    )
    with WorkerProcess(argv, env, tmp_path / "worker.log") as worker:
        samples = scrape_until(
            f"http://127.0.0.1:{port}/metrics",
            lambda s: (
                s.value("tokenpulse_worker_events_consumed_total") == produced
                and s.value("tokenpulse_worker_dead_letters_total") == 1
                and s.value("tokenpulse_worker_pending_events") == 0
            ),
            timeout_s=35.0,
            context=worker.log_tail,
        )
    accepted = samples.labelled("tokenpulse_worker_partition_events_total")
    by_outcome: dict[str, float] = {}
    for labels, value in accepted.items():
        outcome = dict(labels)["outcome"]
        by_outcome[outcome] = by_outcome.get(outcome, 0) + value
    assert by_outcome == {"accepted": 300, "duplicate": 0, "replayed": 0, "late": 0}
    assert {dict(labels)["partition"] for labels in accepted} == {"0", "1"}
    assert samples.value("tokenpulse_worker_events_redelivered_total") == 0
    # 30 s of events in one-minute windows: every key's panes are still open (no later event closed them)
    assert sum(samples.labelled("tokenpulse_worker_open_panes").values()) == 4
    assert (samples.value("tokenpulse_worker_flushes_total") or 0) >= 1
    assert (samples.value("process_cpu_seconds_total") or 0) > 0

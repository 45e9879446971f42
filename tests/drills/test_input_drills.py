"""Fault drills of bad input and a bad disk: adversarial timestamps, a read-only and a full spool directory."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from tokenpulse.testing import InfluxEndpoint
from tokenpulse.testing.drills import (
    DrillPipeline,
    PipelineProcess,
    answered_requests,
    influx_event_ids,
    pipeline_env,
    tracebacks,
    wait_for,
    write_workload,
)
from tokenpulse.testing.streams import TimingFactory, TimingKey, balanced_keys, consume_all, create_topics, produce
from tokenpulse.testing.streams import timing_records as records_of

pytestmark = [pytest.mark.integration, pytest.mark.faults]

S = 1_000_000_000
YEAR_NS = 365 * 86_400 * S
SIMULATOR = SimulatorConfig(endpoints={"fast": LatencyProfile(ttft_ms=5, tokens_per_s=2000)})


def test_adversarial_timestamps_are_dead_letters_and_every_window_stays_exact(
    kafka_bootstrap: str, influx: InfluxEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    pipeline = DrillPipeline(tmp_path, kafka_bootstrap, topic_prefix, influx)
    timings = f"{topic_prefix}.request-timings"
    create_topics(kafka_bootstrap, [timings, f"{topic_prefix}.request-timings.dlq"], 6)
    keys: list[TimingKey] = balanced_keys(6, 6)
    factory = TimingFactory(seed=11, error_rate=0.0)
    now = time.time_ns()
    start = now - now % (10 * S) - 30 * S
    good = list(factory.stream(keys, 600, start_ns=start, interval_ns=S // 20))  # 30 s, 20 a second
    ahead = [factory.event(key, now + YEAR_NS) for key in keys]  # a probe whose clock is a year ahead
    ancient = [factory.event(key, now - 30 * YEAR_NS) for key in keys]  # ... or decades behind
    stream = good[:200] + ahead + good[200:400] + ancient + good[400:]
    try:
        pipeline.worker()
        pipeline.sink()
        produce(kafka_bootstrap, timings, records_of(stream))
        report = pipeline.verify({str(e.event_id) for e in good}, windowed=good)
        dlq = consume_all(
            kafka_bootstrap, f"{topic_prefix}.request-timings.dlq", until=lambda r: len(r) >= 12, timeout_s=30
        )
    finally:
        pipeline.stop()
    reasons = sorted(record.headers["error"].decode().split(":")[0] for record in dlq)
    print("\n" + report.line("adversarial timestamps") + f"; dead letters {len(dlq)}: {sorted(set(reasons))}")
    assert reasons == ["expired_event_time"] * 6 + ["future_event_time"] * 6
    report.assert_exact()


def test_a_read_only_spool_directory_stops_the_probe_with_a_clear_error(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "data" / "spool"
    spool_dir.mkdir(parents=True)
    env = pipeline_env(kafka_bootstrap, topic_prefix, tmp_path / "data")
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(spool_dir)], check=True)  # read-only even for root
    else:
        spool_dir.chmod(0o500)
    try:
        with SimulatorProcess(SIMULATOR) as sim:
            workload = write_workload(
                tmp_path / "w.yaml", sim.endpoint_url("fast"), name="ro", rate_per_s=20, duration_s=2
            )
            probe = PipelineProcess(["probe", "-w", str(workload), "--no-live"], env, tmp_path / "probe.log")
            code = probe.start().wait(60)
            answered = answered_requests(sim)
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(spool_dir)], check=True)
        spool_dir.chmod(0o700)
    output = " ".join(probe.log().split())  # the CLI's console wraps long lines
    print(f"\nDRILL read-only spool: exit {code}, requests answered {len(answered)}: {output.strip()[-300:]}")
    assert code == 2 and "cannot open the spool" in output and "writable data directory" in output
    assert not answered  # nothing probed that could not be kept
    assert not tracebacks(probe)


def test_a_full_spool_stops_the_probe_and_keeps_every_event_it_took(
    kafka_bootstrap: str, influx: InfluxEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    away = pipeline_env("127.0.0.1:1", topic_prefix, tmp_path / "data")
    away["TOKENPULSE_SPOOL_MAX_BYTES"] = "40000"  # some 40 events
    pipeline = DrillPipeline(tmp_path, kafka_bootstrap, topic_prefix, influx)
    try:
        with SimulatorProcess(SIMULATOR) as sim:
            workload = write_workload(
                tmp_path / "full.yaml", sim.endpoint_url("fast"), name="full", rate_per_s=20, duration_s=60
            )
            probe = PipelineProcess(["probe", "-w", str(workload), "--no-live"], away, tmp_path / "probe-full.log")
            code = probe.start().wait(120)
            answered_full = answered_requests(sim)
            pipeline.worker()
            pipeline.sink()
            # The broker is back (the real one now): the same probe id replays the spool, then probes briefly.
            write_workload(workload, sim.endpoint_url("fast"), name="full", rate_per_s=20, duration_s=1)
            again = pipeline.process("probe", "probe", "-w", str(workload), "--no-live").start()
            assert again.wait(120) == 0, again.log()[-2000:]
            answered = answered_requests(sim)
        wait_for(lambda: len(influx_event_ids(influx)) >= len(answered) - 10, 90)
        report = pipeline.verify(answered, timeout_s=10)
    finally:
        pipeline.stop()
    output = " ".join(probe.log().split())  # the CLI's console wraps long lines
    refused = answered_full - set(influx_event_ids(influx))
    print(
        "\n"
        + report.line("full spool")
        + f"; first run exit {code}, answered {len(answered_full)}, refused when full {len(refused)}"
    )
    assert code == 2 and "is full" in output and "spool_max_bytes" in output
    assert not tracebacks(probe)
    # Only what the full spool refused (the probe stopped on it, saying so) is missing; nothing else.
    assert 1 <= len(refused) <= 5 and report.counts.duplicates == 0 and report.counts.extra == 0
    assert report.counts.lost == len(refused)
    assert not report.wrong_windows and not report.tracebacks

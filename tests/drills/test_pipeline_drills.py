"""Fault drills of the whole pipeline: a service SIGKILLed while the probe measures, then started again.

Each checks that every request the simulator answered is in InfluxDB exactly once, that every 10 s window
in InfluxDB has the exact count of the events on Kafka, and that no log shows a traceback; each prints a
``DRILL`` line with its counts and the time each service took to come back. Drills that kill the broker
or influxd start their own (``restartable_kafka`` / ``restartable_influx``), never the shared one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from tokenpulse.testing import InfluxEndpoint, RestartableService
from tokenpulse.testing.drills import DrillPipeline, answered_requests, influx_event_ids, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SIMULATOR = SimulatorConfig(endpoints={"fast": LatencyProfile(ttft_ms=5, tokens_per_s=2000)})


def stored(influx: InfluxEndpoint) -> int:
    return len(influx_event_ids(influx))


def test_broker_sigkilled_and_restarted_while_probing(
    restartable_kafka: RestartableService, influx: InfluxEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    pipeline = DrillPipeline(tmp_path, restartable_kafka.bootstrap, topic_prefix, influx)
    try:
        with SimulatorProcess(SIMULATOR) as sim:
            pipeline.worker()
            pipeline.sink()
            # Long enough to outlast the outage: a broker restarted after SIGKILL took 30-42 s here.
            probe = pipeline.probe(sim.endpoint_url("fast"), rate_per_s=10, duration_s=90)
            # The worker is up (it has written a window): faust exits if the broker is away while it starts.
            wait_for(lambda: len(pipeline.influx_windows()) >= 1 and stored(influx) >= 20, 90)
            restartable_kafka.kill()
            time.sleep(8)
            started = time.monotonic()
            restartable_kafka.start()
            kafka_back_s = time.monotonic() - started
            before = stored(influx)
            pipeline_back_s = wait_for(lambda: stored(influx) > before + 20, 120) + kafka_back_s
            assert probe.wait(180) == 0, probe.log()[-2000:]
            answered = answered_requests(sim)
        report = pipeline.verify(answered)
        report.recovery_s = {"kafka": kafka_back_s, "pipeline (new points in InfluxDB)": pipeline_back_s}
    finally:
        pipeline.stop()
    print("\n" + report.line("broker SIGKILLed while probing"))
    report.assert_exact()


def test_worker_sigkilled_mid_window(
    kafka_bootstrap: str, influx: InfluxEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    pipeline = DrillPipeline(tmp_path, kafka_bootstrap, topic_prefix, influx)
    try:
        with SimulatorProcess(SIMULATOR) as sim:
            worker = pipeline.worker()
            pipeline.sink()
            probe = pipeline.probe(sim.endpoint_url("fast"), rate_per_s=20, duration_s=30)
            wait_for(lambda: len(pipeline.influx_windows()) >= 1 and stored(influx) >= 100, 90)
            time.sleep(3.3)  # mid-window: windows are 10 s
            worker.kill()
            pipeline.worker()
            windows = len(pipeline.influx_windows())
            worker_back_s = wait_for(lambda: len(pipeline.influx_windows()) > windows, 120)
            assert probe.wait(180) == 0, probe.log()[-2000:]
            answered = answered_requests(sim)
        report = pipeline.verify(answered)
        report.recovery_s = {"worker (its first new window in InfluxDB)": worker_back_s}
    finally:
        pipeline.stop()
    print("\n" + report.line("worker SIGKILLed mid-window"))
    report.assert_exact()


def test_influxd_sigkilled_during_writes(
    kafka_bootstrap: str, restartable_influx: RestartableService, topic_prefix: str, tmp_path: Path
) -> None:
    influx = restartable_influx.influx.with_new_bucket("drill")
    pipeline = DrillPipeline(tmp_path, kafka_bootstrap, topic_prefix, influx)
    try:
        with SimulatorProcess(SIMULATOR) as sim:
            pipeline.worker()
            pipeline.sink()
            probe = pipeline.probe(sim.endpoint_url("fast"), rate_per_s=20, duration_s=30)
            wait_for(lambda: len(pipeline.influx_windows()) >= 1 and stored(influx) >= 40, 90)
            restartable_influx.kill()
            time.sleep(5)
            started = time.monotonic()
            restartable_influx.start()
            influx_back_s = time.monotonic() - started
            before = stored(influx)
            sink_back_s = wait_for(lambda: stored(influx) > before + 20, 120) + influx_back_s
            assert probe.wait(180) == 0, probe.log()[-2000:]
            answered = answered_requests(sim)
        report = pipeline.verify(answered)
        report.recovery_s = {"influxd": influx_back_s, "sink (new points)": sink_back_s}
    finally:
        pipeline.stop()
    print("\n" + report.line("influxd SIGKILLed during writes"))
    report.assert_exact()

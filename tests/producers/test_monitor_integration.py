"""``tokenpulse monitor`` as deployed: a subprocess, real Kafka, the simulator over real HTTP, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig
from tokenpulse.producers.simulator.server import SimulatorServer
from tokenpulse.schemas import RequestTiming, decode
from tokenpulse.testing.metrics import Samples, scrape_until
from tokenpulse.testing.streams import consume_all

pytestmark = pytest.mark.integration
NS_PER_MS = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def endpoint(name: str, base_url: str) -> dict[str, Any]:
    return {"name": name, "kind": "openai", "provider": f"sim-{name}", "base_url": base_url, "model": f"m-{name}"}


def workload(name: str, endpoints: list[dict[str, Any]], schedule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "endpoints": endpoints,
        "prompts": {"synthetic": {"count": 4, "input_tokens": 40, "output_tokens": 8}},
        "schedule": schedule,
        "timeouts": {"connect_s": 2, "first_token_s": 10, "total_s": 20},
        **extra,
    }


def write(path: Path, document: dict[str, Any] | str) -> Path:
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


class MonitorProcess:
    """``tokenpulse monitor`` in a subprocess with JSON logs in a file."""

    def __init__(self, paths: list[Path], env: dict[str, str], log_path: Path, drain_timeout_s: float = 10) -> None:
        self.port = free_port()
        self.log_path = log_path
        argv = [sys.executable, "-m", "tokenpulse", "monitor", "--no-live", "--log-format", "json"]
        argv += ["--metrics-port", str(self.port), "--drain-timeout", str(drain_timeout_s)]
        for path in paths:
            argv += ["-w", str(path)]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"message": line, "level": "raw"})
        return lines

    def log_text(self) -> str:
        return self.log_path.read_text()[-6000:]

    def healthz(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)

    def wait_ready(self, timeout_s: float = 30) -> None:
        scrape_until(self.metrics_url, lambda s: "tokenpulse_probe_requests_total" in s.text, timeout_s, self.log_text)

    def scrape(self) -> Samples:
        return Samples(httpx.get(self.metrics_url, timeout=5).text)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout_s: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def final_stats(self) -> dict[str, Any]:
        stopped = [line for line in self.logs() if line.get("message", "").startswith("monitor stopped")]
        assert stopped, self.log_text()
        return stopped[-1]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def monitor_env(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    env.update(
        TOKENPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_DATA_DIR=str(tmp_path / "data"),
        TOKENPULSE_HOME=str(tmp_path / "home"),
    )
    return env


@pytest.fixture
def started() -> Iterator[list[MonitorProcess]]:
    processes: list[MonitorProcess] = []
    yield processes
    for process in processes:
        process.kill()


def events_of(bootstrap: str, topic: str, count: int, timeout_s: float = 60) -> list[RequestTiming]:
    records = consume_all(bootstrap, topic, until=lambda r: len(r) >= count, timeout_s=timeout_s)
    return [decode(RequestTiming, r.value) for r in records if r.value is not None]


def planned_ns(event: RequestTiming) -> int:
    assert event.schedule_lag_ms is not None
    return event.started_at - int(event.schedule_lag_ms * NS_PER_MS)


def test_two_workloads_for_a_minute_bursts_on_time_and_lag_recorded(
    monitor_env: dict[str, str], tmp_path: Path, started: list[MonitorProcess]
) -> None:
    every_s, jitter_s, burst = 10, 2, 3
    config = SimulatorConfig(endpoints={"fast": LatencyProfile(ttft_ms=20, tokens_per_s=500)})
    with SimulatorServer(config) as sim:
        unique = {"synthetic": {"count": 4, "input_tokens": 40, "output_tokens": 8, "unique": True}}
        periodic = workload(
            "beat",
            [endpoint("fast", sim.endpoint_url("fast"))],
            {
                "kind": "periodic",
                "every": f"{every_s}s",
                "requests": burst,
                "concurrency": burst,
                "jitter": f"{jitter_s}s",
            },
            prompts=unique,
        )
        steady = workload("steady", [endpoint("fast", sim.endpoint_url("fast"))], {"kind": "open", "rate_per_s": 5})
        paths = [write(tmp_path / "beat.yaml", periodic), write(tmp_path / "steady.yaml", steady)]
        monitor = MonitorProcess(paths, monitor_env, tmp_path / "monitor.log")
        started.append(monitor)
        monitor.wait_ready()
        assert monitor.healthz().json()["workloads"] == ["beat", "steady"]
        time.sleep(60)
        assert monitor.stop() == 0, monitor.log_text()
        truth = sim.ground_truth()

    stats = monitor.final_stats()
    assert stats["published"] == stats["delivered"] > 300 and stats["pending_in_spool"] == 0
    topic = f"{monitor_env['TOKENPULSE_TOPIC_PREFIX']}.request-timings"
    events = events_of(monitor_env["TOKENPULSE_KAFKA_BOOTSTRAP"], topic, stats["published"])
    assert len(events) == stats["published"] == len({e.event_id for e in events})
    assert {e.workload for e in events} == {"beat", "steady"}
    assert all(e.status == "ok" for e in events)

    beats = sorted((e for e in events if e.workload == "beat"), key=planned_ns)
    bursts: list[list[RequestTiming]] = []
    for event in beats:  # the requests of one burst share its planned time
        if bursts and planned_ns(event) - planned_ns(bursts[-1][0]) < NS_PER_MS:
            bursts[-1].append(event)
        else:
            bursts.append([event])
    assert 6 <= len(bursts) <= 7 and all(len(b) == burst for b in bursts), [len(b) for b in bursts]
    offsets_ns = [planned_ns(b[0]) - k * every_s * 10**9 for k, b in enumerate(bursts)]
    assert max(offsets_ns) - min(offsets_ns) <= jitter_s * 10**9 + NS_PER_MS  # each within its jitter

    nonces = [e.prompt_nonce for e in beats]
    assert all(nonces) and len(set(nonces)) == len(nonces)  # no two requests of the run share a nonce
    assert all(e.prompt_nonce is None for e in events if e.workload == "steady")
    assert {truth[str(e.event_id)].prompt_tokens for e in beats} == {40}  # the declared length, on the wire

    lags = sorted(e.schedule_lag_ms or 0.0 for e in events if e.workload == "steady")
    p50, p99 = lags[len(lags) // 2], lags[int(0.99 * (len(lags) - 1))]
    print(f"steady open loop: {len(lags)} requests, schedule lag p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    # The 5 ms p99 target is a figure of bench/monitor_soak.py; on this shared machine the test only checks
    # that the schedule is kept, with room for the neighbours' load.
    assert p50 < 5.0 and p99 < 100.0


def test_refused_port_and_429_back_off_open_the_breaker_and_recover_without_a_burst(
    monitor_env: dict[str, str], tmp_path: Path, started: list[MonitorProcess]
) -> None:
    refused_port = free_port()  # nothing listens here until the "provider" comes back
    backoff = {"initial": "100ms", "max": "1s", "breaker_after": 3}
    config = SimulatorConfig(
        endpoints={"limited": LatencyProfile(ttft_ms=10, tokens_per_s=1000, rate_429=1.0, retry_after_s=None)}
    )
    with SimulatorServer(config) as sim:
        refused = workload(
            "refused",
            [endpoint("down", f"http://127.0.0.1:{refused_port}/down/v1")],
            {"kind": "closed", "concurrency": 2},
            backoff=backoff,
        )
        limited = workload(
            "limited",
            [endpoint("limited", sim.endpoint_url("limited"))],
            {"kind": "open", "rate_per_s": 20},
            backoff=backoff,
        )
        monitor = MonitorProcess(
            [write(tmp_path / "refused.yaml", refused), write(tmp_path / "limited.yaml", limited)],
            monitor_env,
            tmp_path / "monitor.log",
        )
        started.append(monitor)
        monitor.wait_ready()
        failing_s = 8.0
        time.sleep(failing_s)
        during = monitor.scrape()
        assert during.value("tokenpulse_probe_endpoint_up", workload="refused", endpoint="down") == 0
        assert during.value("tokenpulse_probe_endpoint_up", workload="limited", endpoint="limited") == 0
        refused_requests = during.value("tokenpulse_probe_requests_total", workload="refused", endpoint="down") or 0
        limited_requests = during.value("tokenpulse_probe_requests_total", workload="limited", endpoint="limited") or 0
        skipped = during.value("tokenpulse_probe_skipped_total", workload="limited", endpoint="limited") or 0
        # Without backoff: thousands of refused connections a second, and all 20/s to the limited endpoint.
        assert 3 <= refused_requests <= 40, refused_requests
        assert 3 <= limited_requests <= 40 and skipped >= 60, (limited_requests, skipped)

        recovered_at_ns = time.time_ns()
        sim.set_profile("limited", LatencyProfile(ttft_ms=10, tokens_per_s=1000))
        with SimulatorServer(SimulatorConfig(endpoints={"down": LatencyProfile(ttft_ms=10)}), port=refused_port):
            after = scrape_until(
                monitor.metrics_url,
                lambda s: (
                    s.value("tokenpulse_probe_endpoint_up", workload="refused", endpoint="down") == 1
                    and s.value("tokenpulse_probe_endpoint_up", workload="limited", endpoint="limited") == 1
                ),
                timeout_s=20,
                context=monitor.log_text,
            )
            assert after.value(
                "tokenpulse_probe_last_success_timestamp_seconds", workload="limited", endpoint="limited"
            )
            time.sleep(4)
            assert monitor.stop() == 0, monitor.log_text()

    stats = monitor.final_stats()
    topic = f"{monitor_env['TOKENPULSE_TOPIC_PREFIX']}.request-timings"
    events = events_of(monitor_env["TOKENPULSE_KAFKA_BOOTSTRAP"], topic, stats["published"])
    assert len(events) == stats["published"]
    sent_after = sorted(e.started_at for e in events if e.workload == "limited" and e.started_at >= recovered_at_ns)
    assert any(e.status == "ok" for e in events if e.workload == "limited")
    # No burst after recovery: at 20/s a 250 ms window holds about 5 arrivals, never the skipped backlog.
    busiest = max(sum(1 for t in sent_after if s <= t < s + 250 * NS_PER_MS) for s in sent_after)
    assert busiest <= 15, busiest
    errors = {e.error_kind for e in events if e.status == "error"}
    assert errors <= {"connect", "http_429"}, errors


def test_sighup_reloads_a_changed_file_keeps_it_when_invalid_and_sigterm_publishes_every_finished_request(
    monitor_env: dict[str, str], tmp_path: Path, started: list[MonitorProcess]
) -> None:
    # Slow streams (about 1 s each), so that SIGTERM comes while requests are in flight.
    config = SimulatorConfig(endpoints={"slow": LatencyProfile(ttft_ms=100, tokens_per_s=8)})
    with SimulatorServer(config) as sim:
        document = workload(
            "reloaded",
            [endpoint("slow", sim.endpoint_url("slow"))],
            {"kind": "open", "rate_per_s": 4},
            tags={"rev": "1"},
        )
        path = write(tmp_path / "reloaded.yaml", document)
        monitor = MonitorProcess([path], monitor_env, tmp_path / "monitor.log", drain_timeout_s=15)
        started.append(monitor)
        monitor.wait_ready()
        time.sleep(3)

        write(path, {**document, "tags": {"rev": "2"}})
        monitor.signal(signal.SIGHUP)
        time.sleep(3)
        changed_at_ns = time.time_ns()
        write(path, "name: reloaded\nschedule: {kind: sometimes}\n")
        monitor.signal(signal.SIGHUP)
        time.sleep(3)
        health = monitor.healthz()
        assert health.status_code == 200 and health.json()["reload_errors"] == 1
        errors = [line for line in monitor.logs() if line.get("level") == "error"]
        assert errors and str(path) in errors[0]["message"] and "keeping workload 'reloaded'" in errors[0]["message"]
        assert monitor.stop() == 0, monitor.log_text()
        truth = sim.ground_truth()

    stats = monitor.final_stats()
    assert stats["published"] == stats["delivered"] and stats["pending_in_spool"] == 0
    topic = f"{monitor_env['TOKENPULSE_TOPIC_PREFIX']}.request-timings"
    events = events_of(monitor_env["TOKENPULSE_KAFKA_BOOTSTRAP"], topic, stats["published"])
    assert len(events) == stats["published"] == len({e.event_id for e in events})
    # Every request the provider received finished and was published: the ones in flight at SIGTERM too.
    assert {str(e.event_id) for e in events} == set(truth)
    assert all(e.status == "ok" for e in events)
    assert {e.tags["rev"] for e in events} == {"1", "2"}
    assert {e.tags["rev"] for e in events if e.started_at > changed_at_ns} == {"2"}  # the invalid file changed nothing


def test_a_broker_outage_is_one_line_going_and_one_coming_back_and_no_event_is_lost(
    restartable_kafka: Any, topic_prefix: str, tmp_path: Path, started: list[MonitorProcess]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    env.update(
        TOKENPULSE_KAFKA_BOOTSTRAP=restartable_kafka.bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_DATA_DIR=str(tmp_path / "data"),
        TOKENPULSE_HOME=str(tmp_path / "home"),
    )
    config = SimulatorConfig(endpoints={"fast": LatencyProfile(ttft_ms=10, tokens_per_s=1000)})
    with SimulatorServer(config) as sim:
        steady = workload("steady", [endpoint("fast", sim.endpoint_url("fast"))], {"kind": "open", "rate_per_s": 5})
        monitor = MonitorProcess([write(tmp_path / "steady.yaml", steady)], env, tmp_path / "monitor.log")
        started.append(monitor)
        monitor.wait_ready()
        time.sleep(3)
        restartable_kafka.stop()

        def said(text: str) -> list[dict[str, Any]]:
            return [line for line in monitor.logs() if text in line.get("message", "")]

        deadline = time.monotonic() + 60
        while not said("is away") and time.monotonic() < deadline:
            time.sleep(1)
        assert said("is away"), monitor.log_text()
        time.sleep(5)
        restartable_kafka.start()
        deadline = time.monotonic() + 120
        while not said("is back") and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)
        assert monitor.stop(timeout_s=120) == 0, monitor.log_text()

    assert len(said("is away")) == 1 and len(said("is back")) == 1, monitor.log_text()
    assert not [line for line in monitor.logs() if line.get("logger", "").startswith("kafka")]
    assert not [line for line in monitor.logs() if line.get("level") == "raw"]  # only JSON lines
    stats = monitor.final_stats()
    assert stats["published"] == stats["delivered"] and stats["pending_in_spool"] == 0, stats
    topic = f"{topic_prefix}.request-timings"
    events = events_of(restartable_kafka.bootstrap, topic, stats["published"], timeout_s=90)
    assert len({e.event_id for e in events}) == stats["published"]  # none lost (a replay may duplicate)

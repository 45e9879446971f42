"""Pieces of the fault drills (``-m faults``): the pipeline's processes, and what InfluxDB holds.

A drill starts its own broker or influxd when it kills one (``RestartableService``), runs the probe, the
worker and the sink as the user would (``python -m tokenpulse ...`` subprocesses), and checks the outcome
against the simulator's ground truth: every request it answered is in InfluxDB once, nothing else is.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DrillCounts",
    "DrillPipeline",
    "DrillReport",
    "PipelineProcess",
    "answered_requests",
    "influx_event_ids",
    "pipeline_env",
    "tracebacks",
    "wait_for",
    "write_workload",
]

TRACEBACK = re.compile(r"^Traceback \(most recent call last\)", re.MULTILINE)
# kafka-python logs the socket error of a connection the broker dropped with its traceback (ERROR
# kafka.net.transport "Error receiving network data"): the record of the drill's own SIGKILL, not a defect.
BROKER_DROPPED = re.compile(
    r"kafka\.net\.transport: .*\n(?:(?!Traceback).*\n)*?Traceback.*\n(?:  .*\n)+"
    r"(ConnectionResetError|ConnectionRefusedError|BrokenPipeError|TimeoutError|OSError)[^\n]*\n"
)


def pipeline_env(bootstrap: str, topic_prefix: str, data_dir: Path, influx: Any | None = None) -> dict[str, str]:
    """The environment of a drill's tokenpulse processes (the caller's own ``TOKENPULSE_*`` left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    env.update(
        TOKENPULSE_KAFKA_BOOTSTRAP=bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_DATA_DIR=str(data_dir),
    )
    if influx is not None:
        env.update(
            TOKENPULSE_INFLUX_URL=influx.url,
            TOKENPULSE_INFLUX_TOKEN=influx.token,
            TOKENPULSE_INFLUX_ORG=influx.org,
            TOKENPULSE_INFLUX_BUCKET=influx.bucket,
        )
    return env


def write_workload(path: Path, base_url: str, *, name: str, rate_per_s: float, duration_s: float) -> Path:
    """An open-loop workload of one simulated endpoint, no warm-up (every answered request is measured)."""
    document = {
        "name": name,
        "duration_s": duration_s,
        "schedule": {"kind": "open", "rate_per_s": rate_per_s, "seed": 7},
        "prompts": {"synthetic": {"count": 5, "input_tokens": 20, "output_tokens": 8}},
        "endpoints": [
            {"name": "fast", "kind": "openai", "provider": "simulator", "base_url": base_url, "model": "sim-fast"}
        ],
    }
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class PipelineProcess:
    """One ``python -m tokenpulse ARGS`` subprocess with its output in ``log_path``."""

    args: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> PipelineProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tokenpulse", *self.args],
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def tracebacks(*processes: PipelineProcess) -> list[str]:
    """The logs that show a Python traceback (each as ``name: first lines``); a drill wants none."""
    found = []
    for proc in processes:
        text = BROKER_DROPPED.sub("", proc.log())
        match = TRACEBACK.search(text)
        if match:
            found.append(f"{proc.log_path.name}: {text[match.start() : match.start() + 1500]}")
    return found


def influx_event_ids(influx: Any, measurement: str = "llm_request") -> Counter[str]:
    """How many points of ``measurement`` carry each ``event_id`` (2 would be a duplicate)."""
    query = (
        f'from(bucket: "{influx.bucket}") |> range(start: 0) '
        f'|> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "event_id") '
        '|> group() |> keep(columns: ["_value"])'
    )
    with influx.client(timeout=30_000) as client:
        tables = client.query_api().query(query)
    return Counter(str(record.get_value()) for table in tables for record in table.records)


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> float:
    """Seconds until ``predicate`` held (it may raise while a service is down); ``AssertionError`` on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:
            pass
        time.sleep(poll_s)
    raise AssertionError(f"not reached within {timeout_s} s")


@dataclass(frozen=True)
class DrillCounts:
    """What a drill reports: requests the simulator answered, what InfluxDB holds, and the difference."""

    sent: int
    stored: int
    duplicates: int
    lost: int
    extra: int

    @classmethod
    def of(cls, answered: set[str], stored: Counter[str]) -> DrillCounts:
        return cls(
            sent=len(answered),
            stored=sum(stored.values()),
            duplicates=sum(n - 1 for n in stored.values() if n > 1),
            lost=len(answered - set(stored)),
            extra=len(set(stored) - answered),
        )


DRILL_WINDOW = "10s"
DRILL_WINDOW_NS = 10 * 1_000_000_000


class DrillPipeline:
    """Probe -> Kafka -> worker -> sink -> InfluxDB, each a subprocess, for one drill.

    Windows are 10 s with 2 s grace and a 3 s idle close, so the last window closes soon after the probe
    stops. ``verify`` compares InfluxDB with the simulator's ground truth and with the exact windows of
    the events read back from Kafka.
    """

    def __init__(self, tmp_path: Path, bootstrap: str, topic_prefix: str, influx: Any) -> None:
        self.tmp_path = tmp_path
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.influx = influx
        self.env = pipeline_env(bootstrap, topic_prefix, tmp_path / "data", influx)
        self.processes: list[PipelineProcess] = []

    def process(self, name: str, *args: str) -> PipelineProcess:
        proc = PipelineProcess(list(args), self.env, self.tmp_path / f"{name}-{len(self.processes)}.log")
        self.processes.append(proc)
        return proc

    def worker(self) -> PipelineProcess:
        args = ("worker", "--windows", DRILL_WINDOW, "--grace", "2s", "--idle-close", "3", "--log-level", "warning")
        return self.process("worker", *args).start()

    def sink(self) -> PipelineProcess:
        return self.process("sink", "sink").start()

    def probe(self, base_url: str, *, rate_per_s: float, duration_s: float, name: str = "drill") -> PipelineProcess:
        workload = write_workload(
            self.tmp_path / f"{name}.yaml", base_url, name=name, rate_per_s=rate_per_s, duration_s=duration_s
        )
        return self.process("probe", "probe", "-w", str(workload), "--no-live").start()

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()

    def kafka_events(self) -> list[Any]:
        """Every event on the request-timings topic, first copy of each ``event_id`` (duplicates are the
        worker's to absorb)."""
        from kafka import KafkaConsumer, TopicPartition

        from tokenpulse.schemas import RequestTiming, decode
        from tokenpulse.testing.streams import consume_all

        topic = f"{self.topic_prefix}.request-timings"
        probe = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or [])]
            total = sum(probe.end_offsets(partitions).values())
        finally:
            probe.close()
        records = consume_all(self.bootstrap, topic, until=lambda r: len(r) >= total, timeout_s=60)
        seen: dict[str, Any] = {}
        for record in records:
            if record.value is not None:
                event = decode(RequestTiming, record.value)
                seen.setdefault(str(event.event_id), event)
        return list(seen.values())

    def influx_windows(self) -> dict[tuple[str, str, int], int]:
        """``count`` of every 10 s window in InfluxDB, by provider, model and window end (ns)."""
        query = (
            f'from(bucket: "{self.influx.bucket}") |> range(start: 0) '
            f'|> filter(fn: (r) => r._measurement == "llm_window" and r._field == "count" '
            f'and r.window == "{DRILL_WINDOW}") |> group() |> keep(columns: ["_time", "_value", "provider", "model"])'
        )
        with self.influx.client(timeout=30_000) as client:
            tables = client.query_api().query(query)
        windows: dict[tuple[str, str, int], int] = {}
        for table in tables:
            for record in table.records:
                end_ns = round(record.get_time().timestamp()) * 1_000_000_000  # window ends are whole seconds
                windows[(record.values["provider"], record.values["model"], end_ns)] = int(record.get_value())
        return windows

    def verify(
        self, answered: set[str], timeout_s: float = 120.0, *, windowed: Sequence[Any] | None = None
    ) -> DrillReport:
        """Wait for every answered request and every exact window in InfluxDB; report what holds.

        The exact windows are those of the events on Kafka, or of ``windowed`` when given (the events the
        worker must window: a drill that also sends events the worker rejects).
        """
        from tokenpulse.testing.streams import exact_windows

        with contextlib.suppress(AssertionError):
            wait_for(lambda: set(influx_event_ids(self.influx)) >= answered, timeout_s)
        events = self.kafka_events() if windowed is None else list(windowed)
        expected = {(k[0], k[1], k[-1]): w.count for k, w in exact_windows(events, DRILL_WINDOW_NS).items()}
        with contextlib.suppress(AssertionError):
            wait_for(lambda: self.influx_windows() == expected, 60)
        stored = influx_event_ids(self.influx)
        if windowed is not None:
            stored = Counter({event_id: n for event_id, n in stored.items() if event_id in answered})
        found = self.influx_windows()
        wrong = {end: (count, found.get(end)) for end, count in expected.items() if found.get(end) != count}
        extra = {end: count for end, count in found.items() if end not in expected}
        return DrillReport(
            DrillCounts.of(answered, stored),
            kafka_events=len(events),
            windows=len(expected),
            wrong_windows=wrong,
            extra_windows=extra,
            tracebacks=tracebacks(*self.processes),
        )


@dataclass
class DrillReport:
    """A drill's outcome: the counts, the windows checked, and any traceback in the processes' logs."""

    counts: DrillCounts
    kafka_events: int
    windows: int
    wrong_windows: dict[tuple[str, str, int], tuple[int, int | None]]
    extra_windows: dict[tuple[str, str, int], int]
    tracebacks: list[str]
    recovery_s: dict[str, float] = field(default_factory=dict)

    def line(self, name: str) -> str:
        c = self.counts
        back = ", ".join(f"{what} back in {s:.1f} s" for what, s in self.recovery_s.items())
        return (
            f"DRILL {name}: sent {c.sent}, stored {c.stored}, duplicates {c.duplicates}, lost {c.lost}, extra "
            f"{c.extra}; windows {self.windows} checked, {len(self.wrong_windows)} wrong; {back}"
        )

    def assert_exact(self) -> None:
        c = self.counts
        assert c.lost == 0 and c.duplicates == 0 and c.extra == 0, c
        assert not self.wrong_windows and not self.extra_windows, (self.wrong_windows, self.extra_windows)
        assert self.windows > 0
        assert not self.tracebacks, self.tracebacks[0]


def answered_requests(sim: Any) -> set[str]:
    """Request ids the simulator answered in full (its ground truth)."""
    return {rid for rid, row in sim.ground_truth().items() if row["outcome"] == "ok"}

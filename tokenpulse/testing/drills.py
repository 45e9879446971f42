"""Pieces of the fault drills (``-m faults``): the pipeline's processes, and what InfluxDB holds.

A drill starts its own broker or influxd when it kills one (``RestartableService``), runs the probe, the
worker and the sink as the user would (``python -m tokenpulse ...`` subprocesses), and checks the outcome
against the simulator's ground truth: every request it answered is in InfluxDB once, nothing else is.
"""

from __future__ import annotations

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
    "PipelineProcess",
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

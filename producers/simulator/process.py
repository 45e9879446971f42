"""The simulator in a child process, for measurements that must not share a GIL with the probe."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx

from tokenpulse.producers.simulator.profiles import SimulatorConfig


class SimulatorProcess:
    """``with SimulatorProcess(config) as sim:`` gives ``sim.base_url`` and ``sim.ground_truth()``."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.base_url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimulatorProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tokenpulse.producers.simulator", self.config.model_dump_json()],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.__exit__()
            raise RuntimeError(f"simulator process did not start (said {line!r})")
        self.base_url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def endpoint_url(self, name: str) -> str:
        return f"{self.base_url}/{name}/v1"

    def ground_truth(self) -> dict[str, dict[str, Any]]:
        """Ground truth rows by request id (see ``GroundTruth.as_json``)."""
        rows = httpx.get(f"{self.base_url}/_sim/ground-truth", timeout=30).json()
        return {row["request_id"]: row for row in rows}

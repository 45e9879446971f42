"""``tokenpulse stack up --docker``: the same services from compose.yaml, where a Docker engine answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tokenpulse.private_files import private_dir, write_private
from tokenpulse.stack.errors import StackError


def docker_engine_answers() -> bool:
    """True when a Docker engine (not just the client) responds."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


class ComposeStack:
    """Run ``docker compose`` on the repo's compose.yaml."""

    def __init__(self, project_dir: Path) -> None:
        self.compose_file = project_dir / "compose.yaml"

    def _compose(self, *args: str) -> None:
        if not self.compose_file.exists():
            raise StackError(f"{self.compose_file} not found: run from the tokenpulse checkout")
        if not docker_engine_answers():
            raise StackError("no Docker engine answers: start Docker, or use the native stack (drop --docker)")
        result = subprocess.run(["docker", "compose", "-f", str(self.compose_file), *args], check=False)
        if result.returncode != 0:
            raise StackError(f"`docker compose {' '.join(args)}` failed with exit code {result.returncode}")

    def up(self, home: Path) -> dict[str, dict[str, str]]:
        """Start Kafka, InfluxDB and Grafana; write their connection settings to ``home/stack.json``."""
        token = os.environ.get("TOKENPULSE_INFLUX_TOKEN", "")
        if not token:
            raise StackError("compose.yaml needs TOKENPULSE_INFLUX_TOKEN: export a long random value first")
        self._compose("up", "-d", "--wait", "kafka", "influxdb", "grafana")
        connection = {
            "kafka": {"bootstrap": "127.0.0.1:29092", "version": "4.1.1 (docker)", "data_dir": "volume kafka-data"},
            "influx": {
                "url": "http://127.0.0.1:8086",
                "token": token,
                "org": "tokenpulse",
                "bucket": "tokenpulse",
                "version": "2.7 (docker)",
                "data_dir": "volume influxdb-data",
            },
        }
        private_dir(home)
        write_private(home / "stack.json", json.dumps(connection, indent=2))
        return connection

    def down(self, purge: bool = False) -> None:
        self._compose("down", *(["-v"] if purge else []))

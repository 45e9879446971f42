"""InfluxDB OSS 2.x ``influxd`` as a local process, built from its Go module by build.sh."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenpulse.private_files import private_dir, write_private
from tokenpulse.stack.errors import StackError
from tokenpulse.stack.process import ServiceProcess

INFLUXDB_VERSION = "v2.9.1"
BUILD_SCRIPT = Path(__file__).parent / "influxdb" / "build.sh"


def influxd_path(cache: Path, version: str = INFLUXDB_VERSION) -> Path:
    return cache / "influxdb" / version / "influxd"


def ensure_influxd(cache: Path, version: str = INFLUXDB_VERSION, log: Path | None = None) -> Path:
    """Build ``influxd`` once (20-40 min on 2 cores the first time); return its path."""
    binary = influxd_path(cache, version)
    if binary.exists():
        return binary
    for tool, hint in (
        ("go", "install Go 1.25+ (`apt-get install golang` is too old on Debian 12; use go.dev/dl)"),
        ("cargo", "install Rust with rustup (stable)"),
        ("gcc", "`apt-get install gcc`"),
        ("pkg-config", "`apt-get install pkgconf`"),
    ):
        if shutil.which(tool) is None:
            raise StackError(f"building influxd needs `{tool}`, which is missing: {hint}")
    log = log or cache / "influxdb" / f"build-{version}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), version],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            env=_build_env(cache),
        )
    if result.returncode != 0 or not binary.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise StackError(f"building influxd {version} failed (log {log}): {' | '.join(tail)}")
    return binary


def _build_env(cache: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["TOKENPULSE_CACHE"] = str(cache)
    return env


@dataclass(frozen=True)
class InfluxConfig:
    data_dir: Path
    port: int
    org: str = "tokenpulse"
    bucket: str = "tokenpulse"
    username: str = "tokenpulse"
    version: str = INFLUXDB_VERSION

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class InfluxServer:
    """Run one ``influxd`` on loopback with its own data dir, set it up once, stop it cleanly."""

    def __init__(self, cfg: InfluxConfig, binary: Path) -> None:
        self.cfg = cfg
        self.binary = binary
        self.process = ServiceProcess("influxd", cfg.data_dir, marker=str(cfg.data_dir))

    @property
    def token_file(self) -> Path:
        return self.cfg.data_dir / "admin-token"

    def start(self) -> int:
        d = private_dir(self.cfg.data_dir)
        argv = [
            str(self.binary),
            "--bolt-path",
            str(d / "influxd.bolt"),
            "--engine-path",
            str(d / "engine"),
            "--sqlite-path",
            str(d / "influxd.sqlite"),
            "--http-bind-address",
            f"127.0.0.1:{self.cfg.port}",
            "--reporting-disabled",
            "--log-level",
            "warn",
            "--storage-wal-fsync-delay",
            "0s",
        ]
        return self.process.start(argv)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.exited_early()
            if code is not None:
                raise StackError(
                    f"influxd exited with code {code} while starting; log {self.process.log_file}:\n"
                    + self.process.log_tail()
                )
            if health(self.cfg.url):
                return
            time.sleep(0.2)
        raise StackError(f"influxd on {self.cfg.url} did not pass /health within {timeout_s:.0f}s")

    def setup(self) -> str:
        """Run the one-time setup (org, bucket, admin token) if not done yet; return the token."""
        status = _request_json("GET", f"{self.cfg.url}/api/v2/setup")
        if not status.get("allowed", False):
            if not self.token_file.exists():
                raise StackError(
                    f"influxd in {self.cfg.data_dir} is set up but its token file is missing: "
                    "remove the data dir (`tokenpulse stack down --purge`) to start afresh"
                )
            return self.token_file.read_text().strip()
        token = secrets.token_urlsafe(32)
        _request_json(
            "POST",
            f"{self.cfg.url}/api/v2/setup",
            {
                "username": self.cfg.username,
                "password": secrets.token_urlsafe(16),
                "org": self.cfg.org,
                "bucket": self.cfg.bucket,
                "retentionPeriodSeconds": 0,
                "token": token,
            },
        )
        write_private(self.token_file, token)
        return token


def health(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return bool(json.loads(response.read()).get("status") == "pass")
    except (OSError, ValueError):
        return False


def _request_json(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read() or b"{}")
            return result
    except urllib.error.HTTPError as exc:
        raise StackError(f"influxd {method} {url} answered {exc.code}: {exc.read()[:200]!r}") from None

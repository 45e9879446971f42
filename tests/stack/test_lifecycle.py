"""`tokenpulse stack up/status/down` against real native processes, driven through the CLI."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tokenpulse.stack.process import ServiceProcess

pytestmark = pytest.mark.integration


def tokenpulse(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenpulse", "stack", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def status_json(home: Path) -> tuple[int, dict]:
    result = tokenpulse(home, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def test_up_status_idempotent_kill_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = tokenpulse(home, "up")
    assert up.returncode == 0, up.stderr
    code, status = status_json(home)
    assert code == 0 and status["healthy"] is True
    assert status["kafka"]["healthy"] and status["influx"]["healthy"]
    assert status["kafka"]["version"] == "4.1.1" and status["influx"]["version"] == "v2.9.1"
    assert status["influx"]["org"] == "tokenpulse" and status["influx"]["bucket"] == "tokenpulse"
    assert status["influx"]["token"] == "***"  # masked unless --show-secrets
    shown = json.loads(tokenpulse(home, "status", "--json", "--show-secrets").stdout)
    token = shown["influx"]["token"]
    assert len(token) > 20 and token == json.loads((home / "stack.json").read_text())["influx"]["token"]
    # Files holding the token are owner-only, and so are the directories they are in.
    assert stat.S_IMODE((home / "stack.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((Path(status["influx"]["data_dir"]) / "admin-token").stat().st_mode) == 0o600
    pids = (status["kafka"]["pid"], status["influx"]["pid"])

    again = tokenpulse(home, "up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    _, status = status_json(home)
    assert (status["kafka"]["pid"], status["influx"]["pid"]) == pids

    env_lines = tokenpulse(home, "env").stdout
    assert f"export TOKENPULSE_KAFKA_BOOTSTRAP={status['kafka']['bootstrap']}" in env_lines
    assert "export TOKENPULSE_INFLUX_TOKEN=" in env_lines

    ServiceProcess("kafka", home / "kafka", marker=str(home / "kafka")).kill()
    code, status = status_json(home)
    assert code == 1
    assert status["kafka"]["running"] is False and status["kafka"]["healthy"] is False
    assert status["influx"]["healthy"] is True

    # up after a crash restarts only what died, on the same port, keeping its data
    restarted = tokenpulse(home, "up")
    assert restarted.returncode == 0, restarted.stderr
    code, after = status_json(home)
    assert code == 0 and after["kafka"]["port"] == status["kafka"]["port"]
    assert after["influx"]["pid"] == pids[1]

    down = tokenpulse(home, "down")
    assert down.returncode == 0 and "influx" in down.stderr and "kafka" in down.stderr
    code, status = status_json(home)
    assert code == 1
    assert not status["kafka"]["running"] and not status["influx"]["running"]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_stale_pid_file_is_ignored(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "kafka").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / "kafka" / "kafka.pid").write_text(json.dumps({"pid": dead.pid, "marker": str(home / "kafka")}))
    up = tokenpulse(home, "up", "--only", "kafka")
    try:
        assert up.returncode == 0, up.stderr
        assert "ready on" in up.stderr
        code, status = status_json(home)
        assert code == 0
        assert status["kafka"]["healthy"] and status["kafka"]["pid"] != dead.pid
    finally:
        tokenpulse(home, "down")


def test_port_in_use_fails_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = tokenpulse(home, "up", "--kafka-port", str(port))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(f"127.0.0.1:{port}" in line and "already in use" in line for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    assert ServiceProcess("kafka", home / "kafka", marker=str(home / "kafka")).running_pid() is None
    assert ServiceProcess("influxd", home / "influxdb", marker=str(home / "influxdb")).running_pid() is None


def test_missing_java_is_named(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = dict(os.environ, PATH=str(empty_bin))
    result = tokenpulse(tmp_path / "home", "up", "--only", "kafka", env=env)
    assert result.returncode == 2
    assert "Java 17+ is missing" in result.stderr and "apt-get install" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_go_for_a_fresh_influxd_build_is_named(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = dict(os.environ, PATH=str(empty_bin), TOKENPULSE_CACHE=str(tmp_path / "empty-cache"))
    result = tokenpulse(tmp_path / "home", "up", "--only", "influx", env=env)
    assert result.returncode == 2
    assert "building influxd needs `go`" in result.stderr
    assert "Traceback" not in result.stderr

"""A long-running service process with a pid file, a log file and a clean stop.

The pid file records the pid together with a marker (the service's data directory) that appears on the
process's command line, so a pid reused by an unrelated process after a reboot is recognised as stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenpulse.stack.errors import StackError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(port: int, service: str, host: str = "127.0.0.1") -> None:
    if port_in_use(port, host):
        raise StackError(
            f"port {host}:{port} for {service} is already in use: stop what listens there "
            f"(`ss -ltnp 'sport = :{port}'`) or choose another port"
        )


@dataclass(frozen=True)
class PidRecord:
    pid: int
    marker: str


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


class ServiceProcess:
    """Start, find, and stop one service process whose state lives in ``run_dir``."""

    def __init__(self, name: str, run_dir: Path, marker: str) -> None:
        self.name = name
        self.run_dir = run_dir
        self.marker = marker
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = run_dir / f"{name}.log"

    def running_pid(self) -> int | None:
        """The pid of the live process, or None; a stale pid file is removed."""
        try:
            record = PidRecord(**json.loads(self.pid_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if self._alive(record.pid) and record.marker in _cmdline(record.pid):
            return record.pid
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _is_zombie(pid)

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` detached in its own session, logging to ``log_file``; return its pid."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.marker not in " ".join(argv):
            raise ValueError(f"the command line of {self.name} must contain its marker {self.marker!r}")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "marker": self.marker}))
        self._child = proc
        return proc.pid

    def exited_early(self) -> int | None:
        """The exit code if the process we started has already exited, else None."""
        child = getattr(self, "_child", None)
        return None if child is None else child.poll()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL after ``timeout_s``; True if something was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        self._signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._alive(pid):
            self._reap()
            time.sleep(0.1)
        if self._alive(pid):
            self._signal(pid, signal.SIGKILL)
            while self._alive(pid):
                self._reap()
                time.sleep(0.05)
        self._reap()
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return True

    def kill(self) -> None:
        """SIGKILL without cleanup: what a crash looks like (used by tests)."""
        pid = self.running_pid()
        if pid is not None:
            self._signal(pid, signal.SIGKILL)
            while self._alive(pid):
                self._reap()
                time.sleep(0.05)

    def _reap(self) -> None:
        child = getattr(self, "_child", None)
        if child is not None:
            child.poll()

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

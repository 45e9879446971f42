"""``tokenpulse monitor``: every workload on its schedule, continuously, in one process and one event loop.

Each workload file becomes a :class:`~tokenpulse.producers.probe.WorkloadRun` on the same loop, so many
workloads and endpoints share the process without waiting for each other (each send is its own task; the
schedule lag of every request is in its event). The monitor is operated with signals:

- ``SIGHUP`` reloads the files: a changed workload is halted (its requests in flight finish) and started
  again from the new file; a new file starts; a removed one stops; a file that no longer validates is
  reported and its running workload kept.
- ``SIGTERM`` / ``SIGINT`` stop every schedule, let the requests in flight finish for at most
  ``drain_timeout_s``, and return; the caller then flushes the publisher.

The broker's absence is said once when it goes and once when it comes back (:class:`BrokerWatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.probe import (
    Clocks,
    EventSink,
    ProbeSummary,
    WorkloadRun,
    refresh_every,
    resolve_api_keys,
)
from tokenpulse.producers.publisher import PublishStats
from tokenpulse.producers.workload import Workload, load_workload

log = logging.getLogger(__name__)

WORKLOAD_SUFFIXES = (".yaml", ".yml")
# /healthz fails when the event loop has not refreshed the figures for this long: a stuck loop.
LOOP_STALE_S = 5.0

__all__ = ["BrokerWatch", "Monitor", "workload_files"]


def workload_files(paths: Iterable[Path]) -> list[Path]:
    """The workload files named by ``paths``: files as given, directories by their ``*.yaml``/``*.yml``."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in WORKLOAD_SUFFIXES and p.is_file()))
        elif path.exists():
            found.append(path)
        else:
            raise WorkloadError(f"workload {path}: no such file or directory; give a workload YAML or a directory")
    if not found:
        names = ", ".join(str(p) for p in paths) or "(none)"
        raise WorkloadError(f"no workload files in {names}; give -w FILE.yaml or -w DIRECTORY with *.yaml files")
    return found


@dataclass
class _Running:
    workload: Workload
    run: WorkloadRun
    task: asyncio.Task[ProbeSummary]


@dataclass
class MonitorStatus:
    """What ``/healthz`` reports (read from the metrics server's thread: plain values only)."""

    state: Literal["starting", "running", "draining", "stopped"] = "starting"
    heartbeat_s: float = field(default_factory=time.monotonic)
    reloads: int = 0
    reload_errors: int = 0


class Monitor:
    """Runs the workloads of ``paths`` until ``stop()``; ``reload()`` re-reads them."""

    def __init__(
        self,
        paths: Sequence[Path],
        sink: EventSink,
        *,
        environ: Mapping[str, str],
        clocks: Clocks | None = None,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self.paths = list(paths)
        self.sink = sink
        self.environ = environ
        self.clocks = clocks or Clocks()
        self.drain_timeout_s = drain_timeout_s
        self.status = MonitorStatus()
        self._running: dict[Path, _Running] = {}
        self._retiring: set[asyncio.Task[ProbeSummary]] = set()
        self._stopping: asyncio.Event | None = None
        self._reload_wanted = False

    # ---- what the live view, /metrics and /healthz read ------------------------------------------------
    def summaries(self) -> list[ProbeSummary]:
        return [running.run.summary for running in list(self._running.values())]

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)`` for ``/healthz``: healthy while running with a live event loop."""
        status = self.status
        loop_age_s = time.monotonic() - status.heartbeat_s
        endpoints = {
            f"{summary.workload}/{name}": {
                "up": endpoint.figures.up,
                "requests": endpoint.figures.requests,
                "errors": endpoint.figures.errors,
                "last_success": endpoint.figures.last_success_s,
            }
            for summary in self.summaries()
            for name, endpoint in list(summary.endpoints.items())
        }
        healthy = status.state == "running" and loop_age_s < LOOP_STALE_S
        body = {
            "status": "ok" if healthy else status.state if loop_age_s < LOOP_STALE_S else "event loop stalled",
            "workloads": sorted({s.workload for s in self.summaries()}),
            "reloads": status.reloads,
            "reload_errors": status.reload_errors,
            "endpoints": endpoints,
        }
        return healthy, body

    # ---- control ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the schedules (from the loop's thread, e.g. a signal handler)."""
        if self._stopping is not None:
            self._stopping.set()

    def request_reload(self) -> None:
        self._reload_wanted = True

    def load(self) -> dict[Path, Workload]:
        """Every workload file validated, or a ``WorkloadError`` naming the first bad one."""
        loaded: dict[Path, Workload] = {}
        for path in workload_files(self.paths):
            loaded[path] = self._load_one(path, loaded)
        return loaded

    def _load_one(self, path: Path, others: Mapping[Path, Workload]) -> Workload:
        workload = load_workload(path, continuous=True)
        resolve_api_keys(workload, self.environ)  # a missing key is the file's error, now rather than later
        clash = next((p for p, w in others.items() if w.name == workload.name and p != path), None)
        if clash is not None:
            raise WorkloadError(
                f"{path}: workload name {workload.name!r} is also used by {clash}; give each workload its own name"
            )
        return workload

    def _start(self, path: Path, workload: Workload) -> None:
        api_keys = resolve_api_keys(workload, self.environ)
        run = WorkloadRun(workload, self.sink, api_keys=api_keys, clocks=self.clocks)
        task = asyncio.create_task(run.run(), name=f"workload {workload.name}")
        task.add_done_callback(self._on_run_done)
        self._running[path] = _Running(workload, run, task)
        schedule = workload.schedule.model_dump(exclude_none=True)
        log.info("workload %s from %s started: %d endpoints, %s", workload.name, path, len(run.probes), schedule)

    def _on_run_done(self, task: asyncio.Task[ProbeSummary]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s stopped with an error: %s: %s", task.get_name(), type(exc).__name__, exc)

    def _retire(self, path: Path) -> None:
        running = self._running.pop(path)
        running.run.halt()
        self._retiring.add(running.task)
        running.task.add_done_callback(self._retiring.discard)

    def reload(self) -> None:
        """Re-read the files: restart changed workloads, start new ones, stop removed ones; keep a running
        workload whose file no longer validates (and say so)."""
        self.status.reloads += 1
        try:
            files = workload_files(self.paths)
        except WorkloadError as exc:
            self.status.reload_errors += 1
            log.error("reload: %s; keeping the %d running workloads", exc, len(self._running))
            return
        wanted: dict[Path, Workload] = {}
        for path in files:
            others = {p: r.workload for p, r in self._running.items()} | wanted
            try:
                wanted[path] = self._load_one(path, others)
            except WorkloadError as exc:
                self.status.reload_errors += 1
                kept = self._running.get(path)
                keeping = f"keeping workload {kept.workload.name!r} as it was" if kept else "not started"
                log.error("reload: %s; %s", exc, keeping)
                if kept is not None:
                    wanted[path] = kept.workload
        for path in list(self._running):
            if path not in wanted:
                log.info("reload: %s removed; workload %s stops", path, self._running[path].workload.name)
                self._retire(path)
        for path, workload in wanted.items():
            current = self._running.get(path)
            if current is not None and current.workload == workload:
                continue
            if current is not None:
                log.info("reload: %s changed; workload %s restarts", path, workload.name)
                self._retire(path)
            self._start(path, workload)

    async def run(self, *, install_signals: bool = True) -> None:
        """Start every workload and run until ``stop()`` (or SIGTERM/SIGINT); SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        workloads = self.load()
        if install_signals:
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            loop.add_signal_handler(signal.SIGTERM, self.stop)
            loop.add_signal_handler(signal.SIGINT, self.stop)
        for path, workload in workloads.items():
            self._start(path, workload)
        self.status.state = "running"
        refresher = asyncio.create_task(refresh_every(self._tick))
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.25)
                if self._reload_wanted:
                    self._reload_wanted = False
                    self.reload()
        finally:
            self.status.state = "draining"
            if install_signals:
                for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            await self._drain()
            refresher.cancel()
            for summary in self.summaries():
                summary.refresh()
            self.status.state = "stopped"

    def _tick(self) -> list[ProbeSummary]:
        self.status.heartbeat_s = time.monotonic()
        return self.summaries()

    async def _drain(self) -> None:
        """Halt every schedule and wait at most ``drain_timeout_s`` for the requests in flight."""
        for running in self._running.values():
            running.run.halt()
        tasks = [r.task for r in self._running.values()] + list(self._retiring)
        if not tasks:
            return
        log.info("stopping: waiting up to %gs for the requests in flight", self.drain_timeout_s)
        _done, pending = await asyncio.wait(tasks, timeout=self.drain_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "stopping: %d workloads still had requests in flight after %gs; cancelled",
                len(pending),
                self.drain_timeout_s,
            )
            await asyncio.gather(*pending, return_exceptions=True)


class BrokerWatch:
    """One log line when the broker goes away and one when it is back.

    Away: sends failed or went to the spool, or events are waiting for Kafka's acknowledgement and none has
    come for ``stall_s`` (kafka-python retries quietly for up to its delivery timeout first). Back: an
    acknowledgement arrives again.
    """

    def __init__(
        self,
        stats: Callable[[], PublishStats],
        bootstrap: str,
        logger: logging.Logger = log,
        *,
        stall_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._bootstrap = bootstrap
        self._log = logger
        self._stall_s = stall_s
        self._clock = clock
        self._last = stats()
        self._last_progress_s = clock()
        self.away = False

    def check(self) -> None:
        now = self._stats()
        failed = now.spooled > self._last.spooled or now.send_failures > self._last.send_failures
        delivered = now.delivered > self._last.delivered
        waiting = now.published - (now.delivered - now.replayed) - now.spooled
        if delivered or waiting <= 0:
            self._last_progress_s = self._clock()
        stalled = waiting > 0 and self._clock() - self._last_progress_s >= self._stall_s
        if not self.away and (failed or stalled) and not delivered:
            self.away = True
            self._log.warning(
                "Kafka at %s is away: %d events wait for it (in the spool or in the client)",
                self._bootstrap,
                max(waiting, 0) + now.spooled - now.replayed,
            )
        elif self.away and delivered:
            self.away = False
            self._log.warning(
                "Kafka at %s is back: delivering again (%d events went to the spool meanwhile)",
                self._bootstrap,
                now.spooled,
            )
        self._last = now

    async def watch(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()

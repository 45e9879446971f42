"""Real Kafka and InfluxDB endpoints for tests, benchmarks and the demo.

Resolution order, per service: endpoints given in ``TOKENPULSE_*`` environment variables, then
testcontainers where a Docker engine answers, then the native stack started in a private home (the
download and build caches in ``~/.cache/tokenpulse`` are shared, the data is not).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tokenpulse.config import default_cache
from tokenpulse.stack.docker import docker_engine_answers
from tokenpulse.stack.native import NativeStack


class ServiceUnavailable(RuntimeError):
    """A real service could not be provided; the message says which and why."""


@dataclass(frozen=True)
class InfluxEndpoint:
    url: str
    token: str
    org: str
    bucket: str

    def __repr__(self) -> str:  # keep the token out of test output
        return f"InfluxEndpoint(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r}, token=***)"

    def client(self, **kwargs: Any) -> Any:
        from influxdb_client.client.influxdb_client import InfluxDBClient

        return InfluxDBClient(url=self.url, token=self.token, org=self.org, **kwargs)

    def with_new_bucket(self, prefix: str = "test") -> InfluxEndpoint:
        """Create a fresh bucket in this org and return an endpoint that points at it."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with self.client() as client:
            org_id = client.organizations_api().find_organizations(org=self.org)[0].id
            client.buckets_api().create_bucket(bucket_name=name, org=org_id)
        return replace(self, bucket=name)


@dataclass(frozen=True)
class LlmEndpoint:
    """A running llama.cpp ``llama-server``: ``base_url`` for OpenAI clients, ``origin`` for /health, /metrics."""

    base_url: str
    model: str

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/").removesuffix("/v1")


class ServiceProvider:
    """Hands out Kafka, InfluxDB and llama-server endpoints, starting them on first use; ``close()`` stops them."""

    def __init__(self, scratch: Path, env: dict[str, str] | None = None) -> None:
        self.scratch = scratch
        self.env = dict(os.environ if env is None else env)
        self._stack: NativeStack | None = None
        self._containers: list[Any] = []
        self._kafka: str | None = None
        self._influx: InfluxEndpoint | None = None
        self._llm: LlmEndpoint | None = None
        self._docker: bool | None = None

    @property
    def native(self) -> NativeStack:
        if self._stack is None:
            self._stack = NativeStack(self.scratch / "stack", default_cache())
        return self._stack

    def _docker_available(self) -> bool:
        if self._docker is None:
            wanted = self.env.get("TOKENPULSE_TEST_DOCKER", "auto") != "never"
            # testcontainers is the optional ``docker`` extra: without it the native stack serves
            self._docker = wanted and importlib.util.find_spec("testcontainers") is not None and docker_engine_answers()
        return self._docker

    def kafka_bootstrap(self) -> str:
        if self._kafka is None:
            self._kafka = self._resolve_kafka()
        return self._kafka

    def _resolve_kafka(self) -> str:
        if bootstrap := self.env.get("TOKENPULSE_KAFKA_BOOTSTRAP"):
            return bootstrap
        if self._docker_available():
            from testcontainers.kafka import KafkaContainer

            container = KafkaContainer("apache/kafka:4.1.1").with_kraft()
            container.start()
            self._containers.append(container)
            return str(container.get_bootstrap_server())
        try:
            status = self.native.up(["kafka"])
        except Exception as exc:
            raise ServiceUnavailable(f"native Kafka could not start: {exc}") from exc
        return str(status.connection["kafka"]["bootstrap"])

    def influx(self) -> InfluxEndpoint:
        if self._influx is None:
            self._influx = self._resolve_influx()
        return self._influx

    def _resolve_influx(self) -> InfluxEndpoint:
        if url := self.env.get("TOKENPULSE_INFLUX_URL"):
            token = self.env.get("TOKENPULSE_INFLUX_TOKEN")
            if not token:
                raise ServiceUnavailable("TOKENPULSE_INFLUX_URL is set but TOKENPULSE_INFLUX_TOKEN is not")
            return InfluxEndpoint(
                url,
                token,
                self.env.get("TOKENPULSE_INFLUX_ORG", "tokenpulse"),
                self.env.get("TOKENPULSE_INFLUX_BUCKET", "tokenpulse"),
            )
        if self._docker_available():
            from testcontainers.influxdb2 import InfluxDb2Container

            token = secrets.token_urlsafe(24)
            container = InfluxDb2Container(
                "influxdb:2.7",
                init_mode="setup",
                admin_token=token,
                username="tokenpulse",
                password=secrets.token_urlsafe(12),
                org_name="tokenpulse",
                bucket="tokenpulse",
            )
            container.start()
            self._containers.append(container)
            return InfluxEndpoint(container.get_url(), token, "tokenpulse", "tokenpulse")
        try:
            status = self.native.up(["influx"])
        except Exception as exc:
            raise ServiceUnavailable(f"native influxd could not start: {exc}") from exc
        conn = status.connection["influx"]
        return InfluxEndpoint(conn["url"], conn["token"], conn["org"], conn["bucket"])

    def llm(self) -> LlmEndpoint:
        """``TOKENPULSE_LLM_BASE_URL`` if set, else a private native llama-server (built on first use)."""
        if self._llm is None:
            if base_url := self.env.get("TOKENPULSE_LLM_BASE_URL"):
                self._llm = LlmEndpoint(base_url, self.env.get("TOKENPULSE_LLM_MODEL", "local"))
            else:
                try:
                    status = self.native.up(["llm"])
                except Exception as exc:
                    raise ServiceUnavailable(f"native llama-server could not start: {exc}") from exc
                conn = status.connection["llm"]
                self._llm = LlmEndpoint(conn["base_url"], conn["model"])
        return self._llm

    def close(self) -> None:
        if self._stack is not None:
            self._stack.down()
        for container in self._containers:
            with contextlib.suppress(Exception):
                container.stop()


class RestartableService:
    """A private native Kafka or influxd that a test may stop, kill and start again on the same port."""

    def __init__(self, home: Path, service: str) -> None:
        self.service = service
        self.stack = NativeStack(home, default_cache())
        self.stack.up([service])
        self.connection: dict[str, Any] = self.stack.connection()[service]

    @property
    def bootstrap(self) -> str:
        return str(self.connection["bootstrap"])

    @property
    def influx(self) -> InfluxEndpoint:
        c = self.connection
        return InfluxEndpoint(c["url"], c["token"], c["org"], c["bucket"])

    def stop(self) -> None:
        self.stack.down()

    def kill(self) -> None:
        self.stack.kill(self.service)

    def start(self) -> None:
        self.stack.up([self.service], kafka_port=self.connection.get("port"), influx_port=self.connection.get("port"))

    def close(self) -> None:
        self.stack.down()


@contextlib.contextmanager
def restartable(home: Path, service: str) -> Iterator[RestartableService]:
    svc = RestartableService(home, service)
    try:
        yield svc
    finally:
        svc.close()


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"

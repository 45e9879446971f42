"""Pytest fixtures for real Kafka, InfluxDB and llama-server (see ``services.py`` for how they are found).

With ``CI=true`` a service that cannot be provided fails the test; elsewhere it skips it (a developer
without Java or Go can still run the unit tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tokenpulse.testing.services import (
    InfluxEndpoint,
    LlmEndpoint,
    RestartableService,
    ServiceProvider,
    ServiceUnavailable,
    unique_name,
)


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and a required service is missing: {message}", pytrace=False)
    pytest.skip(f"service unavailable (not CI): {message}")


@pytest.fixture(scope="session")
def service_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProvider]:
    provider = ServiceProvider(tmp_path_factory.mktemp("services"))
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(service_provider: ServiceProvider) -> str:
    """``host:port`` of a real Kafka broker, shared by the session."""
    try:
        return service_provider.kafka_bootstrap()
    except ServiceUnavailable as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def influx_server(service_provider: ServiceProvider) -> InfluxEndpoint:
    """A real InfluxDB 2.x shared by the session (its default bucket; prefer ``influx``)."""
    try:
        return service_provider.influx()
    except ServiceUnavailable as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def llm_engine(service_provider: ServiceProvider) -> LlmEndpoint:
    """A real llama.cpp ``llama-server`` (Gemma 3 270M) shared by the session; see ``ServiceProvider.llm``."""
    try:
        return service_provider.llm()
    except ServiceUnavailable as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture
def influx(influx_server: InfluxEndpoint) -> InfluxEndpoint:
    """A real InfluxDB 2.x with a fresh bucket of this test's own."""
    return influx_server.with_new_bucket()


@pytest.fixture
def topic_name() -> Callable[[str], str]:
    """Unique topic names, so tests never see each other's records: ``topic_name("timings")``."""
    return unique_name


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix for tests that run whole components (producer, worker, sinks)."""
    return unique_name("t")


def _private_service(factory: pytest.TempPathFactory, service: str) -> Iterator[RestartableService]:
    try:
        svc = RestartableService(factory.mktemp(f"{service}-private"), service)
    except Exception as exc:
        _unavailable(f"private native {service}: {exc}")
        raise
    yield svc
    svc.close()


@pytest.fixture
def restartable_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableService]:
    """A private native broker the test may stop, kill and start again on the same port."""
    yield from _private_service(tmp_path_factory, "kafka")


@pytest.fixture
def restartable_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableService]:
    """A private native influxd the test may stop and start again on the same port."""
    yield from _private_service(tmp_path_factory, "influx")

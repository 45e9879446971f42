"""Prometheus ``/metrics`` for the long-running commands: the registry, the HTTP server and metric helpers.

The collectors live beside what they measure (``producers.metrics``, ``streams.metrics``, ``sinks.metrics``)
and only register here. Nothing is counted for the metrics' sake: each collector reads, at scrape time, the
plain counters its component keeps anyway, so the hot paths pay nothing. With ``--metrics-port 0`` (the
default) no server is started at all.

Scrapes are answered by prometheus_client's HTTP server thread while the components run on an event loop
of their own. The collectors therefore only read int attributes and copy containers with one C-level call
(``list(d.items())``, ``dict(counter)``), which the GIL keeps whole. The worker's open windows and panes
need a walk over its pane dicts, which its event loop changes: that snapshot is taken on the worker's loop
(``call_on_loop``); if the loop does not get to it within the timeout the scrape fails, which Prometheus
reports as ``up == 0`` for the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Annotated, Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
import typer
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tokenpulse.errors import TokenpulseError

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_METRICS_HOST = "127.0.0.1"
MetricsPortOpt = Annotated[
    int, typer.Option("--metrics-port", min=0, max=65535, help="serve Prometheus /metrics on this port (0: off)")
]
MetricsHostOpt = Annotated[str, typer.Option("--metrics-host", help="address the /metrics server listens on")]

__all__ = [
    "DEFAULT_METRICS_HOST",
    "HealthCheck",
    "MetricsEndpoint",
    "MetricsHostOpt",
    "MetricsPortOpt",
    "MetricsServer",
    "call_on_loop",
    "counter",
    "counters_by_name",
    "gauge",
    "process_registry",
    "serve_metrics",
]


# ---- the server ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricsEndpoint:
    """Where ``/metrics`` is served (``--metrics-host``, ``--metrics-port``); port 0 means no server."""

    port: int = 0
    host: str = DEFAULT_METRICS_HOST

    @property
    def enabled(self) -> bool:
        return self.port > 0


@dataclass
class MetricsServer:
    """A running ``/metrics`` server (prometheus_client's WSGI server in a daemon thread)."""

    registry: CollectorRegistry
    endpoint: MetricsEndpoint
    httpd: WSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.endpoint.host}:{self.endpoint.port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5.0)


def process_registry() -> CollectorRegistry:
    """A fresh registry with prometheus_client's process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]
"""``(healthy, body)``: ``/healthz`` answers 200 or 503 with ``body`` as JSON."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def _start_server_with_health(
    endpoint: MetricsEndpoint, registry: CollectorRegistry, health: HealthCheck
) -> tuple[WSGIServer, threading.Thread]:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            healthy, body = health()
            start_response("200 OK" if healthy else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [orjson.dumps(body, default=str)]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    httpd = make_server(endpoint.host, endpoint.port, app, _ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="tokenpulse-metrics", daemon=True)
    thread.start()
    return httpd, thread


def serve_metrics(
    endpoint: MetricsEndpoint,
    collectors: Iterable[Collector],
    *,
    registry: CollectorRegistry | None = None,
    health: HealthCheck | None = None,
) -> MetricsServer | None:
    """Register ``collectors`` and serve them at ``http://host:port/metrics`` (and ``/healthz`` when a
    ``health`` check is given); ``None`` when the port is 0.

    An address that cannot be bound (port in use, unknown host) is a ``TokenpulseError`` naming the fix.
    """
    if not endpoint.enabled:
        return None
    registry = registry if registry is not None else process_registry()
    for collector in collectors:
        registry.register(collector)
    try:
        if health is None:
            httpd, thread = start_http_server(endpoint.port, endpoint.host, registry)
        else:
            httpd, thread = _start_server_with_health(endpoint, registry, health)
    except OSError as exc:
        raise TokenpulseError(
            f"--metrics-port {endpoint.port}: cannot listen on {endpoint.host}:{endpoint.port} "
            f"({exc.strerror or exc}); choose a free port, or 0 to turn /metrics off"
        ) from None
    server = MetricsServer(registry, endpoint, httpd, thread)
    log.info("Prometheus metrics at %s", server.url)
    return server


def call_on_loop(loop: asyncio.AbstractEventLoop | None, read: Callable[[], T], timeout_s: float) -> T:
    """``read()`` on ``loop``'s thread and its result here; called directly when the loop is not running
    (or is this thread's own). Raises ``TimeoutError`` if the loop does not run it within ``timeout_s``."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop or not loop.is_running():
        return read()
    result: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not result.set_running_or_notify_cancel():
            return
        try:
            result.set_result(read())
        except BaseException as exc:
            result.set_exception(exc)

    loop.call_soon_threadsafe(run)
    try:
        return result.result(timeout_s)
    except concurrent.futures.TimeoutError:
        result.cancel()
        raise TimeoutError(f"the event loop did not answer a metrics scrape within {timeout_s}s") from None


# ---- for the collectors that live with each component -------------------------------------------------------
def counter(name: str, documentation: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=list(labels))


def counters_by_name(
    component: str, families: Iterable[tuple[str, str, str]], stats: Mapping[str, Any]
) -> list[CounterMetricFamily]:
    """``tokenpulse_<component>_<what>_total{<component>=name}`` for each (what, attribute, help) in
    ``families``, with one sample per named stats object (``SinkStats``, ``NotifierStats``)."""
    found = []
    for what, attribute, documentation in families:
        family = counter(
            f"tokenpulse_{component}_{what}_total", f"{component.capitalize()}: {documentation}.", [component]
        )
        for name, named_stats in sorted(stats.items()):
            family.add_metric([name], getattr(named_stats, attribute))
        found.append(family)
    return found


def gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))

"""Commands of the producers package: ``tokenpulse simulate``, ``tokenpulse probe`` and ``tokenpulse monitor``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from tokenpulse.config import Settings
from tokenpulse.errors import TokenpulseError
from tokenpulse.metrics import DEFAULT_METRICS_HOST, MetricsEndpoint, MetricsHostOpt, MetricsPortOpt
from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.workload import describe_validation_error, load_prompts, load_workload

if TYPE_CHECKING:
    from tokenpulse.producers.probe import ProbeSummary
    from tokenpulse.producers.publisher import PublishStats


def load_simulator_config(path: Path | None) -> object:
    from tokenpulse.producers.simulator import SimulatorConfig, default_config

    if path is None:
        return default_config()
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise WorkloadError(f"cannot read simulator config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WorkloadError(f"simulator config {path} is not valid YAML: {exc}") from None
    try:
        return SimulatorConfig.model_validate(document)
    except ValidationError as exc:
        raise WorkloadError(describe_validation_error(exc, str(path))) from None


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""

    @app.command("simulate")
    def simulate(
        config: Annotated[
            Path | None, typer.Option("--config", "-c", help="simulator YAML: endpoints, changes")
        ] = None,
        host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="port (0 picks a free one)")] = 8000,
    ) -> None:
        """Serve SIMULATED OpenAI-compatible providers with latency profiles and scripted regressions.

        Each endpoint NAME is served at http://HOST:PORT/NAME/v1 (use it as an openai base_url); ground
        truth of every request is at /_sim/ground-truth. A test and demo tool, not a provider.
        """
        from tokenpulse.producers.simulator import SimulatorConfig, serve_forever

        sim_config = load_simulator_config(config)
        assert isinstance(sim_config, SimulatorConfig)
        console = Console(stderr=True)

        def ready(base_url: str) -> None:
            console.print(f"provider simulator listening on {base_url}")
            for name in sim_config.endpoints:
                console.print(f"  endpoint [bold]{name}[/bold]: base_url {base_url}/{name}/v1")
            for change in sim_config.changes:
                console.print(f"  scripted change: {change.model_dump(exclude_defaults=True)}")

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_forever(sim_config, host, port, ready))

    @app.command("probe")
    def probe(
        workload_file: Annotated[Path, typer.Option("--workload", "-w", help="workload YAML file")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="only validate the workload")] = False,
        config: Annotated[Path | None, typer.Option("--config", help="tokenpulse settings YAML")] = None,
        home: Annotated[Path | None, typer.Option("--home", help="stack state dir")] = None,
        live: Annotated[bool, typer.Option("--live/--no-live", help="show the live view")] = True,
        drain_timeout: Annotated[float, typer.Option(help="seconds to wait for Kafka at the end")] = 30.0,
        metrics_port: MetricsPortOpt = 0,
        metrics_host: MetricsHostOpt = DEFAULT_METRICS_HOST,
    ) -> None:
        """Run a workload against its endpoints and publish one event per request to Kafka."""
        from tokenpulse.config import load_settings
        from tokenpulse.metrics import serve_metrics
        from tokenpulse.producers.metrics import ProbeCollector, PublisherCollector
        from tokenpulse.producers.probe import new_summary, publisher_for, run_workload
        from tokenpulse.producers.report import summary_table

        console = Console()
        workload = load_workload(workload_file)
        prompts = load_prompts(workload.prompts)
        if dry_run:
            names = ", ".join(f"{e.name} ({e.kind}, {e.model})" for e in workload.endpoints)
            console.print(f"workload {workload.name!r} is valid: {len(prompts)} prompts; endpoints: {names}")
            return
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        settings = load_settings(config, home)
        summary = new_summary(workload)
        publisher = publisher_for(settings, workload)
        try:
            server = serve_metrics(
                MetricsEndpoint(metrics_port, metrics_host), [ProbeCollector(summary), PublisherCollector(publisher)]
            )
        except TokenpulseError:
            publisher.close(timeout_s=1.0)
            raise
        try:
            if live:
                with Live(
                    get_renderable=lambda: summary_table(summary, "live"),
                    console=console,
                    refresh_per_second=4,
                    transient=True,
                ):
                    result = run_workload(
                        workload, settings, summary=summary, publisher=publisher, drain_timeout_s=drain_timeout
                    )
            else:
                result = run_workload(
                    workload, settings, summary=summary, publisher=publisher, drain_timeout_s=drain_timeout
                )
        finally:
            if server is not None:
                server.close()
        console.print(summary_table(result))
        stats = result.publish
        if stats is not None:
            console.print(
                f"published {stats.published} events to {settings.topics.request_timings}: "
                f"{stats.delivered} delivered, {stats.spooled} spooled, {stats.replayed} replayed, "
                f"{stats.pending_in_spool} still in the spool (replayed by the next run)"
            )
        console.print(f"{result.warmup_requests} warm-up requests excluded; {result.elapsed_s:.1f} s")

    @app.command("monitor")
    def monitor(
        workload_paths: Annotated[
            list[Path],
            typer.Option("--workload", "-w", help="workload YAML file or a directory of them (repeatable)"),
        ],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="only validate the workloads")] = False,
        config: Annotated[Path | None, typer.Option("--config", help="tokenpulse settings YAML")] = None,
        home: Annotated[Path | None, typer.Option("--home", help="stack state dir")] = None,
        live: Annotated[bool, typer.Option("--live/--no-live", help="live table (only on a terminal)")] = True,
        drain_timeout: Annotated[
            float, typer.Option(help="seconds for requests in flight, then for Kafka, when stopping")
        ] = 30.0,
        log_format: Annotated[LogFormatChoice, typer.Option("--log-format", help="text or json lines")] = "text",
        log_level: Annotated[
            LogLevelChoice, typer.Option("--log-level", help="debug shows kafka-python's own")
        ] = "info",
        metrics_port: MetricsPortOpt = 0,
        metrics_host: MetricsHostOpt = DEFAULT_METRICS_HOST,
    ) -> None:
        """Run every workload continuously on its schedule until SIGTERM/SIGINT (the deployed probe).

        SIGHUP reloads the workload files (a file that does not validate is reported and its workload kept).
        SIGTERM lets requests in flight finish (at most --drain-timeout), flushes Kafka and exits 0.
        --metrics-port serves /metrics and /healthz.
        """
        from tokenpulse.config import load_settings
        from tokenpulse.logs import configure_logging
        from tokenpulse.producers.monitor import Monitor

        console = Console()
        if dry_run:
            checker = Monitor(workload_paths, sink=_NoSink(), environ=os.environ)
            for path, workload in checker.load().items():
                names = ", ".join(f"{e.name} ({e.kind}, {e.model})" for e in workload.endpoints)
                console.print(
                    f"{path}: workload {workload.name!r} is valid; schedule {workload.schedule.kind}; {names}"
                )
            return
        configure_logging(log_format, getattr(logging, log_level.upper()))
        if log_level != "debug":
            quiet_monitor_logs()
        run_monitor(
            workload_paths,
            load_settings(config, home),
            console=console,
            live=live,
            drain_timeout_s=drain_timeout,
            metrics=MetricsEndpoint(metrics_port, metrics_host),
        )


LogFormatChoice = Literal["text", "json"]
LogLevelChoice = Literal["debug", "info", "warning", "error"]


def quiet_monitor_logs() -> None:
    """kafka-python logs every failed reconnect at ERROR, several a second while a broker is away, and the
    publisher a warning per spooled send; the monitor says once when the broker goes and once when it is back
    (``BrokerWatch``). httpx logs a line per request, which the events already are."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("tokenpulse.producers.publisher").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_monitor(
    workload_paths: list[Path],
    settings: Settings,
    *,
    console: Console,
    live: bool = True,
    drain_timeout_s: float = 30.0,
    metrics: MetricsEndpoint | None = None,
    stop_after_s: float | None = None,
    print_every_s: float | None = None,
) -> tuple[PublishStats, list[ProbeSummary]]:
    """``tokenpulse monitor``: run the workloads until SIGTERM/SIGINT (or ``stop_after_s``), then flush Kafka.

    The live table is drawn on a terminal; elsewhere it is printed every ``print_every_s`` (if given).
    Returns the publisher's counters and the last summaries.
    """
    import gc
    import socket
    import threading

    from tokenpulse.metrics import serve_metrics
    from tokenpulse.producers.metrics import ProbeCollector, PublisherCollector
    from tokenpulse.producers.monitor import BrokerWatch, Monitor
    from tokenpulse.producers.probe import run_async
    from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig
    from tokenpulse.producers.report import monitor_table

    log = logging.getLogger("tokenpulse.monitor")
    spool = Path(settings.data_dir) / "spool" / f"monitor-{socket.gethostname()}.jsonl"
    publisher = KafkaPublisher(
        PublisherConfig(bootstrap=settings.kafka_bootstrap, topic=settings.topics.request_timings, spool_path=spool)
    )
    monitor = Monitor(workload_paths, publisher, environ=os.environ, drain_timeout_s=drain_timeout_s)
    try:
        monitor.load()
        server = serve_metrics(
            metrics or MetricsEndpoint(),
            [ProbeCollector(monitor.summaries), PublisherCollector(publisher)],
            health=monitor.health,
        )
    except TokenpulseError:
        publisher.close(timeout_s=1.0)
        raise
    if server is not None:
        log.info("metrics at %s, health at %s", server.url, server.url.replace("/metrics", "/healthz"))

    async def main() -> None:
        watch = BrokerWatch(publisher.stats_snapshot, settings.kafka_bootstrap)
        watcher = asyncio.create_task(watch.watch())
        if stop_after_s is not None:
            asyncio.get_running_loop().call_later(stop_after_s, monitor.stop)
        gc.freeze()  # what exists at start is never garbage: keep full collections short for the run
        try:
            await monitor.run(install_signals=threading.current_thread() is threading.main_thread())
        finally:
            watcher.cancel()

    printing = threading.Event()

    def print_periodically() -> None:
        assert print_every_s is not None
        while not printing.wait(print_every_s):
            console.print(monitor_table(monitor.summaries()))

    try:
        if live and console.is_terminal:
            with Live(get_renderable=lambda: monitor_table(monitor.summaries()), console=console, refresh_per_second=2):
                run_async(main())
        else:
            if live and print_every_s:
                threading.Thread(target=print_periodically, name="tokenpulse-table", daemon=True).start()
            run_async(main())
        printing.set()
        log.info("schedules stopped; flushing events to Kafka (at most %gs)", drain_timeout_s)
        publisher.drain(drain_timeout_s)
    finally:
        printing.set()
        stats = publisher.close()
        if server is not None:
            server.close()
    log.info(
        "monitor stopped: %d events published, %d delivered, %d still in the spool %s (replayed by the next run)",
        stats.published,
        stats.delivered,
        stats.pending_in_spool,
        spool,
        extra={"published": stats.published, "delivered": stats.delivered, "pending_in_spool": stats.pending_in_spool},
    )
    return stats, monitor.summaries()


class _NoSink:
    def publish(self, event: object) -> None:
        raise AssertionError("a dry run publishes nothing")

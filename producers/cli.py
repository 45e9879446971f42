"""Commands of the producers package: ``tokenpulse simulate`` and ``tokenpulse probe``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from tokenpulse.errors import TokenpulseError
from tokenpulse.metrics import DEFAULT_METRICS_HOST, MetricsEndpoint, MetricsHostOpt, MetricsPortOpt
from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.workload import describe_validation_error, load_prompts, load_workload


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

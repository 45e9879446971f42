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
    except (WindowSpecError, DurationError) as exc:
        raise TokenpulseError(f"--windows/--grace: {exc}") from None
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
        ),
        metrics=MetricsEndpoint(metrics_port, metrics_host),
    )


def worker_argv(
    *,
    windows: tuple[str, ...] = ("1m", "5m/1m"),
    grace: str = "10s",
    partitions: int = REQUEST_TIMINGS_PARTITIONS,
    idle_close_s: float = 30.0,
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
        *extra,
    ]

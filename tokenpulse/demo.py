"""``tokenpulse demo``: the whole pipeline on this machine, a provider regression included.

Simulated providers (clearly named ``simulated-*``) -> probe -> Kafka -> faust worker (10 s windows)
-> InfluxDB sinks and the alert engine -> a local webhook receiver; then a trend report from InfluxDB.
Halfway through, the simulator makes one provider's TTFT three times slower, and later restores it: the
demo shows the window p95 jump, exactly one firing alert and one resolved alert at the webhook.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tokenpulse.formatting import format_number

DEMO_WINDOW = "10s"
QUERIES = Path(__file__).parent / "queries"


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint that records every JSON body POSTed to it (the on-call's webhook)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    received: threading.Event = field(default_factory=threading.Event)

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.bodies.append(json.loads(body or b"{}"))
                receiver.received.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="demo-webhook").start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def states(self) -> list[str]:
        return [str(body.get("state")) for body in self.bodies]


def demo_rules(window: str) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": "ttft-p95-high",
                "kind": "threshold",
                "metric": "ttft_p95_ms",
                "above": 700,
                "for_windows": 2,
                "clear_windows": 2,
                "hysteresis_pct": 10,
                "cooldown": "10m",
                "severity": "critical",
                "match": {"window": window},
            },
        ]
    }


def demo_workload(sim: Any, rate_per_s: float, duration_s: float) -> Any:
    from tokenpulse.producers.workload import parse_workload

    price = [{"effective_from": "2026-01-01", "input_per_mtok": 0.10, "output_per_mtok": 0.40}]
    gpu_price = [{"effective_from": "2026-01-01", "input_per_mtok": 0.20, "output_per_mtok": 0.60}]
    return parse_workload(
        {
            "name": "demo-chat",
            "endpoints": [
                {
                    "name": "wafer",
                    "kind": "openai",
                    "provider": "simulated-wafer",
                    "model": "llama-8b-sim",
                    "base_url": sim.endpoint_url("wafer"),
                    "region": "local",
                    "prices": price,
                },
                {
                    "name": "gpu",
                    "kind": "openai",
                    "provider": "simulated-gpu",
                    "model": "llama-8b-sim",
                    "base_url": sim.endpoint_url("gpu"),
                    "region": "local",
                    "prices": gpu_price,
                },
            ],
            "prompts": {"synthetic": {"count": 16, "input_tokens": 120, "output_tokens": 48, "seed": 7}},
            "max_tokens": 48,
            "schedule": {"kind": "open", "rate_per_s": rate_per_s, "seed": 11},
            "duration_s": duration_s,
            "warmup_requests": 1,
            "timeouts": {"connect_s": 5, "first_token_s": 20, "total_s": 60},
            "tags": {"env": "demo"},
        },
        source="demo workload",
    )


LOCAL_ENGINE_PROVIDER = "REAL-local-llama.cpp"
"""How the real local model is labelled next to the ``simulated-*`` providers."""


def local_engine_workload(base_url: str, model: str, duration_s: float) -> Any:
    """A REAL local model as a third provider: llama.cpp's llama-server (Gemma 3 270M on this CPU).

    Its own workload, closed loop at concurrency 1: a CPU engine has no headroom for the simulated
    providers' open-loop rate, and a queue growing for the whole demo would say nothing about the engine.
    """
    from tokenpulse.producers.workload import parse_workload

    return parse_workload(
        {
            "name": "demo-chat",
            "probe_id": "demo-local-engine",
            "endpoints": [
                {
                    "name": "local-llm",
                    "kind": "openai",
                    "provider": LOCAL_ENGINE_PROVIDER,
                    "model": model,
                    "base_url": base_url,
                    "region": "local",
                    "prices": [{"effective_from": "2026-01-01", "input_per_mtok": 0.0, "output_per_mtok": 0.0}],
                }
            ],
            "prompts": {"synthetic": {"count": 16, "input_tokens": 120, "output_tokens": 48, "seed": 7}},
            "max_tokens": 48,
            "schedule": {"kind": "closed", "concurrency": 1},
            "duration_s": duration_s,
            "warmup_requests": 1,
            "timeouts": {"connect_s": 5, "first_token_s": 20, "total_s": 60},
            "tags": {"env": "demo", "engine": "real"},
        },
        source="demo local engine workload",
    )


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        home: Path | None = typer.Option(None, help="stack state dir [default: $TOKENPULSE_HOME]"),
        duration: float = typer.Option(150.0, help="seconds of probing (the regression is in the middle)"),
        rate: float = typer.Option(4.0, help="requests per second per endpoint (open loop)"),
        out_dir: Path = typer.Option(Path("demo-out"), help="where the trend chart and alerts are written"),
        with_llm: bool = typer.Option(
            False, "--with-llm", help="add a REAL local model (llama.cpp llama-server, Gemma 3 270M) as 3rd provider"
        ),
    ) -> None:
        """Run the whole pipeline here, with a scripted provider regression, in a few minutes."""
        console = Console()
        if not console.is_terminal:
            console = Console(width=140)
        run_demo(home, duration, rate, out_dir, console, with_llm=with_llm)


def run_demo(
    home: Path | None, duration_s: float, rate: float, out_dir: Path, console: Console, *, with_llm: bool = False
) -> None:
    from influxdb_client.client.influxdb_client import InfluxDBClient

    from tokenpulse.config import default_cache, default_home, load_settings
    from tokenpulse.producers.probe import run_workload
    from tokenpulse.producers.report import summary_table
    from tokenpulse.producers.simulator.profiles import LatencyProfile, ProfileChange, SimulatorConfig
    from tokenpulse.producers.simulator.server import SimulatorServer
    from tokenpulse.sinks.influx_admin import create_bucket, init_influx
    from tokenpulse.sinks.notifiers import WebhookNotifier
    from tokenpulse.sinks.rules import parse_rules
    from tokenpulse.sinks.runner import SinkRunner
    from tokenpulse.sinks.trends import plot_report, query_trends
    from tokenpulse.stack.native import NativeStack
    from tokenpulse.streams.cli import worker_argv

    t0 = time.monotonic()

    def step(message: str) -> None:
        console.print(f"[bold cyan][{time.monotonic() - t0:6.1f}s][/bold cyan] {message}")

    step("starting the local stack (Kafka KRaft + influxd; built and cached on first run)")
    services = ("kafka", "influx", "llm") if with_llm else ("kafka", "influx")
    stack_status = NativeStack(
        home or default_home(), default_cache(), say=lambda m: console.print(f"         [dim]{m}[/dim]")
    ).up(services)
    base = load_settings(home=home or default_home())
    run_id = time.strftime("%Y%m%d-%H%M%S")
    token = base.influx_token.get_secret_value()
    with InfluxDBClient(url=base.influx_url, token=token, org=base.influx_org) as client:
        bucket = create_bucket(client, base.influx_org, f"demo-{run_id}-{secrets.token_hex(5)}")
        init_influx(client, base.influx_org, bucket)
    settings = base.model_copy(
        update={
            "topic_prefix": f"demo-{run_id}",
            "influx_bucket": bucket,
            "data_dir": Path(base.data_dir) / f"demo-{run_id}",
        }
    )
    step(
        f"topics [bold]{settings.topic_prefix}.*[/bold], InfluxDB bucket [bold]{bucket}[/bold] "
        "(+ hourly rollup bucket and downsampling task)"
    )

    third = duration_s / 3
    sim = SimulatorServer(
        SimulatorConfig(
            endpoints={
                "wafer": LatencyProfile(ttft_ms=90, ttft_p95_ms=160, tokens_per_s=900, jitter=0.2),
                "gpu": LatencyProfile(ttft_ms=250, ttft_p95_ms=420, tokens_per_s=120, jitter=0.25, error_rate=0.01),
            },
            changes=[
                ProfileChange(after_s=third, endpoint="gpu", ttft_scale=3.0),
                ProfileChange(after_s=2 * third, endpoint="gpu", ttft_scale=1 / 3.0),
            ],
            seed=42,
        )
    ).start()
    step(f"provider simulator on {sim.base_url}: 'gpu' TTFT x3 from {third:.0f}s to {2 * third:.0f}s")

    webhook = WebhookReceiver()
    webhook_url = webhook.start()
    env = dict(
        os.environ,
        TOKENPULSE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        TOKENPULSE_TOPIC_PREFIX=settings.topic_prefix,
        TOKENPULSE_INFLUX_URL=settings.influx_url,
        TOKENPULSE_INFLUX_TOKEN=token,
        TOKENPULSE_INFLUX_ORG=settings.influx_org,
        TOKENPULSE_INFLUX_BUCKET=bucket,
        TOKENPULSE_DATA_DIR=str(settings.data_dir),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    worker_log = out_dir / "worker.log"
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen(
            worker_argv(windows=(DEMO_WINDOW,), grace="2s", idle_close_s=3.0, extra=("--log-level", "warning")),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    step(f"faust worker started (pid {worker.pid}, {DEMO_WINDOW} tumbling windows, log {worker_log})")
    sinks = SinkRunner(settings, parse_rules(demo_rules(DEMO_WINDOW)), [WebhookNotifier(webhook_url)])
    sinks.start()
    step(f"InfluxDB sinks + alert engine running; alerts go to the webhook {webhook_url}")
    local: threading.Thread | None = None
    try:
        if with_llm:
            engine = stack_status.connection["llm"]
            local_workload = local_engine_workload(engine["base_url"], engine["model"], duration_s)
            local = threading.Thread(
                target=run_workload, args=(local_workload, settings), kwargs={"environ": {}}, name="demo-local-llm"
            )
            local.start()
            step(f"probing a REAL local model ({engine['model']} on llama-server {engine['base_url']}), concurrency 1")
        workload = demo_workload(sim, rate, duration_s)
        step(f"probing 2 endpoints at {rate:g} req/s each for {duration_s:.0f}s ...")
        summary = run_workload(workload, settings, environ={})
        if local is not None:
            local.join()
        sent = sum(e.requests for e in summary.endpoints.values())
        step(f"probe done: {sent} requests measured and published")
        console.print(summary_table(summary, title="probe summary (client-side)"))
        step("waiting for the last windows to close and the alert to resolve ...")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "resolved" not in webhook.states():
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}; see {worker_log}")
            time.sleep(1)
        time.sleep(3)  # let the last window batch reach InfluxDB
    finally:
        sinks.stop()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        sim.stop()
        webhook.stop()

    with InfluxDBClient(url=settings.influx_url, token=token, org=settings.influx_org, timeout=60_000) as client:
        windows = client.query_api().query(
            (QUERIES / "demo_windows.flux").read_text(), params={"bucket": bucket, "window": DEMO_WINDOW}
        )
        report = query_trends(client, bucket, since="1d")
    window_rows = [r.values for t in windows for r in t.records]
    _print_windows(console, window_rows)
    _print_alerts(console, webhook.bodies)
    _print_comparison(console, report)
    plot_report(report, out_dir / "trends.png")
    plot_windows(window_rows, webhook.bodies, out_dir / "windows.png")
    (out_dir / "alerts.json").write_text(json.dumps(webhook.bodies, indent=2))
    step(f"charts {out_dir / 'windows.png'} and {out_dir / 'trends.png'}, alerts {out_dir / 'alerts.json'}")
    states = webhook.states()
    verdict = "[green]as expected[/green]" if states == ["firing", "resolved"] else "[red]NOT as expected[/red]"
    step(f"webhook received {states}: {verdict}")
    console.print(
        f'\nThe stack keeps running. Try:\n  eval "$(tokenpulse stack env)"\n'
        f"  TOKENPULSE_INFLUX_BUCKET={bucket} tokenpulse trends --since 1d\n  tokenpulse stack down"
    )
    if states != ["firing", "resolved"]:
        sys.exit(1)


def _print_windows(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"closed {DEMO_WINDOW} windows in InfluxDB (llm_window)")
    for col in ("window end", "provider", "requests", "error rate", "TTFT p95 ms"):
        table.add_column(col, justify="left" if col in ("window end", "provider") else "right")
    for row in rows:
        p95 = row.get("ttft_p95_ms")
        style = "red" if p95 is not None and p95 > 700 else ""
        table.add_row(
            row["_time"].strftime("%H:%M:%S"),
            str(row.get("provider")),
            f"{row.get('count', 0):.0f}",
            f"{row.get('error_rate', 0.0):.2f}",
            f"[{style}]{p95:.0f}[/{style}]" if style else f"{p95 or 0:.0f}",
        )
    console.print(table)


def _print_alerts(console: Console, bodies: list[dict[str, Any]]) -> None:
    table = Table(title="alerts received by the webhook")
    for col in ("state", "rule", "severity", "provider/model", "metric", "value", "threshold", "window end"):
        table.add_column(col, overflow="fold")
    for a in bodies:
        value = a.get("value")
        table.add_row(
            str(a.get("state")),
            str(a.get("rule")),
            str(a.get("severity")),
            f"{a.get('provider')}/{a.get('model')}",
            str(a.get("metric")),
            f"{value:.0f}" if isinstance(value, int | float) else "-",
            str(a.get("threshold")),
            str(a.get("window_end")),
        )
    console.print(table)


def _print_comparison(console: Console, report: Any) -> None:
    table = Table(title="provider comparison from raw llm_request (Flux quantile)")
    for col in (
        "provider/model",
        "requests",
        "err %",
        "TTFT p50",
        "TTFT p95",
        "e2e p95",
        "tok/s",
        "$/1k tok",
        "observed",
        "30 days at this rate",
    ):
        table.add_column(col, justify="left" if col == "provider/model" else "right")
    for c in report.comparison:
        table.add_row(
            f"{c.provider}/{c.model}",
            str(c.requests),
            f"{c.error_rate * 100:.1f}",
            format_number(c.ttft_p50_ms, 0),
            format_number(c.ttft_p95_ms, 0),
            format_number(c.e2e_p95_ms, 0),
            format_number(c.tokens_per_s, 0),
            format_number(c.cost_per_1k_tokens, 5),
            f"{c.observed_hours * 3600:.0f} s",
            "-" if c.projected_30d_cost_usd is None else f"${c.projected_30d_cost_usd:,.2f}",
        )
    console.print(table)


def plot_windows(rows: list[dict[str, Any]], alerts: list[dict[str, Any]], path: Path) -> Path:
    """p95 TTFT of every closed window per provider, with the alert's firing and resolved marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from tokenpulse.schemas import ns_to_datetime, parse_rfc3339_ns

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for provider in sorted({str(r.get("provider")) for r in rows}):
        points = [(r["_time"], r["ttft_p95_ms"]) for r in rows if r.get("provider") == provider]
        ax.plot([t for t, _ in points], [v for _, v in points], marker="o", label=provider)
    for alert in alerts:
        when = ns_to_datetime(parse_rfc3339_ns(str(alert["window_end"])))
        colour = "red" if alert.get("state") == "firing" else "green"
        ax.axvline(mdates.date2num(when), color=colour, linestyle="--", linewidth=1)  # type: ignore[no-untyped-call]
        ax.annotate(
            f"alert {alert.get('state')}",
            (when, ax.get_ylim()[1]),
            color=colour,
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
        )
    ax.set_title(f"p95 time to first token per {DEMO_WINDOW} window (simulated providers)")
    ax.set_ylabel("ms")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Commands of the sinks package: ``sink``, ``trends`` and ``influx init``."""

from __future__ import annotations

import logging
import signal
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tokenpulse.config import load_settings
from tokenpulse.errors import TokenpulseError
from tokenpulse.formatting import format_number
from tokenpulse.metrics import DEFAULT_METRICS_HOST, MetricsEndpoint, MetricsHostOpt, MetricsPortOpt
from tokenpulse.sinks.notifiers import AlertmanagerNotifier, Notifier, SlackNotifier, WebhookNotifier


def read_secret_lines(path: Path, option: str) -> list[str]:
    """The non-empty, non-comment lines of a file holding secrets (URLs); errors never show its content."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except OSError as exc:
        raise SinkConfigError(f"{option} {path}: cannot read it ({exc.strerror}); give a readable file") from None
    found = [line for line in lines if line and not line.startswith("#")]
    if not found:
        raise SinkConfigError(f"{option} {path}: the file holds no URL; put one URL on a line")
    return found


class SinkConfigError(TokenpulseError):
    """A sink option that cannot be used; the message names it and the fix."""


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="tokenpulse YAML config file")]


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    influx_app = typer.Typer(help="InfluxDB housekeeping.", no_args_is_help=True)
    app.add_typer(influx_app, name="influx")

    @app.command("sink")
    def sink(
        config: ConfigOpt = None,
        rules: Annotated[Path | None, typer.Option(help="rules YAML (enables alerting)")] = None,
        webhook: Annotated[
            list[str] | None,
            typer.Option(
                envvar="TOKENPULSE_WEBHOOK_URL",
                help="generic JSON webhook URL (repeatable; env: space-separated). Prefer --webhook-file: "
                "a URL on the command line shows in ps and shell history",
            ),
        ] = None,
        webhook_file: Annotated[
            list[Path] | None, typer.Option(help="file with webhook URLs, one a line (repeatable)")
        ] = None,
        slack_webhook: Annotated[
            str | None, typer.Option(envvar="TOKENPULSE_SLACK_WEBHOOK_URL", help="Slack incoming-webhook URL")
        ] = None,
        slack_webhook_file: Annotated[Path | None, typer.Option(help="file holding the Slack webhook URL")] = None,
        alertmanager: Annotated[
            str | None,
            typer.Option(envvar="TOKENPULSE_ALERTMANAGER_URL", help="Alertmanager base URL, e.g. http://am:9093"),
        ] = None,
        alertmanager_file: Annotated[Path | None, typer.Option(help="file holding the Alertmanager URL")] = None,
        alertmanager_resend: Annotated[
            str, typer.Option(help="re-send firing alerts to Alertmanager this often (below its resolve_timeout)")
        ] = "1m",
        notify_retry_for: Annotated[
            str, typer.Option(help="retry an undelivered alert this long before recording the failure")
        ] = "6h",
        notify_retry_max_delay: Annotated[str, typer.Option(help="longest wait between two delivery attempts")] = "5m",
        influx_auth_exit_after: Annotated[
            str, typer.Option(help="exit (code 2) when InfluxDB refuses the token or bucket for this long")
        ] = "5m",
        metrics_port: MetricsPortOpt = 0,
        metrics_host: MetricsHostOpt = DEFAULT_METRICS_HOST,
    ) -> None:
        """Run the InfluxDB sinks (llm_request, llm_window, llm_alert) and alerting until Ctrl-C."""
        from tokenpulse.durations import parse_duration_ns
        from tokenpulse.retry import Backoff
        from tokenpulse.sinks.notifiers import DeliveryPolicy
        from tokenpulse.sinks.rules import load_rules
        from tokenpulse.sinks.runner import run_sinks

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # httpx logs every request with its full URL at INFO, and webhook URLs are secrets.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
        settings = load_settings(config)
        rule_set = load_rules(rules) if rules else None
        urls = [url for text in webhook or [] for url in text.split()]
        urls += [url for path in webhook_file or [] for url in read_secret_lines(path, "--webhook-file")]
        notifiers: list[Notifier] = [WebhookNotifier(url, name=f"webhook-{i}") for i, url in enumerate(urls)]
        if slack_webhook_file is not None:
            slack_webhook = read_secret_lines(slack_webhook_file, "--slack-webhook-file")[0]
        if slack_webhook:
            notifiers.append(SlackNotifier(slack_webhook))
        if alertmanager_file is not None:
            alertmanager = read_secret_lines(alertmanager_file, "--alertmanager-file")[0]
        if alertmanager:
            resend_s = parse_duration_ns(alertmanager_resend) / 1e9
            notifiers.append(AlertmanagerNotifier(alertmanager, resend_interval_s=resend_s))
        for notifier in notifiers:
            logging.getLogger("tokenpulse.sinks").info("notifier %s -> %s", notifier.name, notifier.host)
        policy = DeliveryPolicy(
            backoff=Backoff(initial_s=1.0, max_s=parse_duration_ns(notify_retry_max_delay) / 1e9),
            retry_for_s=parse_duration_ns(notify_retry_for) / 1e9,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            run_sinks(
                settings,
                rule_set,
                stop,
                notifiers,
                metrics=MetricsEndpoint(metrics_port, metrics_host),
                delivery_policy=policy,
                influx_auth_exit_after_s=parse_duration_ns(influx_auth_exit_after) / 1e9,
            )
        except KeyboardInterrupt:
            stop.set()

    @app.command("trends")
    def trends(
        since: Annotated[str, typer.Option(help="period, e.g. 7d, 30d")] = "30d",
        provider: Annotated[str | None, typer.Option(help="only this provider")] = None,
        model: Annotated[str | None, typer.Option(help="only this model")] = None,
        workload: Annotated[str | None, typer.Option(help="only this workload (and compare providers on it)")] = None,
        output: Annotated[OutputFormat, typer.Option("--format", help="table, csv or json")] = OutputFormat.table,
        plot: Annotated[Path | None, typer.Option(help="also write a PNG chart here")] = None,
        requests_per_day: Annotated[
            float | None, typer.Option(help="production volume: also project the monthly cost at N requests a day")
        ] = None,
        tokens_per_day: Annotated[
            float | None, typer.Option(help="production volume: also project the monthly cost at N tokens a day")
        ] = None,
        workload_file: Annotated[
            Path | None,
            typer.Option(
                "--workload-file",
                "-w",
                help="a workload file: compare providers on it, at the production volume it declares",
            ),
        ] = None,
        config: ConfigOpt = None,
    ) -> None:
        """p50/p95 TTFT, TTFA, e2e and TPOT (successful requests) per provider/model per day, error rate,
        tokens/s, cache hit ratio, reasoning share and cost, and a provider comparison with cost projections."""
        from influxdb_client.client.influxdb_client import InfluxDBClient

        from tokenpulse.sinks.trends import plot_report, query_trends, report_csv, report_json

        if workload_file is not None:
            from tokenpulse.volume import volume_of_workload_file

            name, declared = volume_of_workload_file(workload_file)
            workload = workload or name
            if declared is not None and requests_per_day is None and tokens_per_day is None:
                requests_per_day, tokens_per_day = declared.requests_per_day, declared.tokens_per_day
        settings = load_settings(config)
        token = settings.influx_token.get_secret_value()
        with InfluxDBClient(url=settings.influx_url, token=token, org=settings.influx_org) as client:
            report = query_trends(
                client,
                settings.influx_bucket,
                since=since,
                provider=provider,
                model=model,
                workload=workload,
                requests_per_day=requests_per_day,
                tokens_per_day=tokens_per_day,
            )
        out = Console()
        if output is OutputFormat.csv:
            print(report_csv(report), end="")
        elif output is OutputFormat.json:
            print(report_json(report))
        else:
            daily = Table(title=f"daily trends, last {since}")
            for col in (
                "day",
                "provider/model",
                "requests",
                "err %",
                "TTFT p50",
                "TTFT p95",
                "TTFA p95",
                "e2e p50",
                "e2e p95",
                "TPOT p95",
                "tok/s",
                "cache %",
                "reason %",
                "$/1k tok",
            ):
                daily.add_column(col, justify="right" if col not in ("day", "provider/model") else "left")
            for r in report.rows:
                daily.add_row(
                    str(r.day),
                    f"{r.provider}/{r.model}",
                    str(r.requests),
                    format_number(r.error_rate * 100, 1),
                    format_number(r.ttft_p50_ms, 1),
                    format_number(r.ttft_p95_ms, 1),
                    format_number(r.ttfa_p95_ms, 1),
                    format_number(r.e2e_p50_ms, 1),
                    format_number(r.e2e_p95_ms, 1),
                    format_number(r.tpot_p95_ms, 2),
                    format_number(r.tokens_per_s, 1),
                    format_number(None if r.cache_hit_ratio is None else r.cache_hit_ratio * 100, 1),
                    format_number(None if r.reasoning_share is None else r.reasoning_share * 100, 1),
                    format_number(r.cost_per_1k_tokens, 5),
                )
            out.print(daily)
            scope = f"workload {workload}" if workload else "all workloads"
            compare = Table(title=f"provider comparison ({scope}, last {since})")
            volume = (
                f"30 days at {requests_per_day:,.0f} req/day"
                if requests_per_day is not None
                else f"30 days at {tokens_per_day:,.0f} tok/day"
                if tokens_per_day is not None
                else None
            )
            columns = [
                "provider/model",
                "requests",
                "err %",
                "TTFT p50",
                "TTFT p95",
                "TTFA p95",
                "e2e p95",
                "TPOT p95",
                "tok/s",
                "cache %",
                "$/1k tok",
                "cost",
                "observed",
                "30 days at this rate",
            ]
            for col in [*columns, *([volume] if volume else [])]:
                compare.add_column(col, justify="left" if col == "provider/model" else "right")
            for c in report.comparison:
                cells = [
                    f"{c.provider}/{c.model}",
                    str(c.requests),
                    format_number(c.error_rate * 100, 1),
                    format_number(c.ttft_p50_ms, 1),
                    format_number(c.ttft_p95_ms, 1),
                    format_number(c.ttfa_p95_ms, 1),
                    format_number(c.e2e_p95_ms, 1),
                    format_number(c.tpot_p95_ms, 2),
                    format_number(c.tokens_per_s, 1),
                    format_number(None if c.cache_hit_ratio is None else c.cache_hit_ratio * 100, 1),
                    format_number(c.cost_per_1k_tokens, 5),
                    f"${c.cost_usd:.2f}",
                    _period(c.observed_hours),
                    "-" if c.projected_30d_cost_usd is None else f"${c.projected_30d_cost_usd:,.2f}",
                ]
                if volume:
                    projected = c.projected_30d_cost_at_volume_usd
                    cells.append("-" if projected is None else f"${projected:,.2f}")
                compare.add_row(*cells)
            out.print(compare)
        if plot is not None:
            plot_report(report, plot)
            Console(stderr=True).print(f"chart written to {plot}")

    @influx_app.command("init")
    def influx_init(
        config: ConfigOpt = None,
        retention: Annotated[str, typer.Option(help="retention of the raw bucket ('inf' = keep)")] = "35d",
        rollup_bucket: Annotated[str | None, typer.Option(help="rollup bucket [default: <bucket>_rollup]")] = None,
        rollup_retention: Annotated[str, typer.Option(help="retention of the hourly rollups")] = "400d",
    ) -> None:
        """Create the long-retention rollup bucket and the hourly downsampling task (llm_request -> llm_window_1h)."""
        from influxdb_client.client.influxdb_client import InfluxDBClient

        from tokenpulse.sinks.influx_admin import init_influx

        settings = load_settings(config)
        token = settings.influx_token.get_secret_value()
        with InfluxDBClient(url=settings.influx_url, token=token, org=settings.influx_org) as client:
            result = init_influx(
                client,
                settings.influx_org,
                settings.influx_bucket,
                rollup_bucket=rollup_bucket,
                retention=retention,
                rollup_retention=rollup_retention,
            )
        Console().print(
            f"bucket {result.bucket}: retention {result.bucket_retention_s or 'infinite'}s; "
            f"rollup bucket {result.rollup_bucket}: retention {result.rollup_retention_s or 'infinite'}s; "
            f"task {result.task_id} {'created' if result.task_created else 'updated'}"
        )


def _period(hours: float) -> str:
    """An observed period as a person reads it: seconds, minutes or hours."""
    if hours < 0.1:
        return f"{hours * 3600:.0f} s"
    if hours < 2:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h"

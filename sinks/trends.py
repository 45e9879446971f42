"""``tokenpulse trends``: per-day latency, error, throughput and cost trends, and a provider comparison.

Percentiles are Flux ``quantile(method: "exact_selector")`` over the raw ``llm_request`` values of each day
(the smallest value with at least q of the points at or below it, numpy's ``inverted_cdf``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tokenpulse.durations import parse_duration_ns
from tokenpulse.errors import TokenpulseError
from tokenpulse.sinks.flux import render

_FIELD_NAMES = {"ttft_ms": "ttft", "e2e_ms": "e2e", "tpot_ms": "tpot", "decode_tps": "decode_tps"}


class TrendsError(TokenpulseError):
    """A trends request that cannot be answered (bad --since, unreachable InfluxDB, ...)."""


@dataclass
class TrendRow:
    """One provider/model on one UTC day."""

    day: date
    provider: str
    model: str
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p95_ms: float | None = None
    tokens_per_s: float | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    cost_per_1k_tokens: float | None = None


@dataclass
class ComparisonRow:
    """One provider/model over the whole period (for one workload when ``--workload`` is given)."""

    provider: str
    model: str
    requests: int = 0
    error_rate: float = 0.0
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None
    tpot_p95_ms: float | None = None
    tokens_per_s: float | None = None
    cost_usd: float = 0.0
    cost_per_1k_tokens: float | None = None
    projected_30d_cost_usd: float = 0.0


@dataclass
class TrendReport:
    since: str
    workload: str | None
    rows: list[TrendRow]
    comparison: list[ComparisonRow]


def query_trends(
    client: Any,
    bucket: str,
    *,
    since: str = "30d",
    provider: str | None = None,
    model: str | None = None,
    workload: str | None = None,
    now_ns: int | None = None,
) -> TrendReport:
    """Run the trend queries with an ``influxdb_client.InfluxDBClient`` and assemble the report."""
    try:
        span_ns = parse_duration_ns(since)
    except ValueError as exc:
        raise TrendsError(f"--since: {exc}") from None
    now = datetime.fromtimestamp((now_ns if now_ns is not None else time.time_ns()) / 1e9, UTC)
    start = now - timedelta(microseconds=span_ns // 1000)
    variables: dict[str, Any] = {
        "bucket": bucket,
        "start": start,
        "stop": now + timedelta(seconds=1),
        "provider": provider or "",
        "model": model or "",
        "workload": workload or "",
    }
    api = client.query_api()
    rows: dict[tuple[date, str, str], TrendRow] = {}

    def row(when: datetime, record: Any) -> TrendRow:
        key = (when.astimezone(UTC).date(), record.values["provider"], record.values["model"])
        if key not in rows:
            rows[key] = TrendRow(*key)
        return rows[key]

    for q, label in ((0.5, "p50"), (0.95, "p95")):
        for table in api.query(render("daily_latency", {**variables, "q": q})):
            for record in table.records:
                name = _FIELD_NAMES[record.get_field()]
                target = row(record.get_time(), record)
                if name == "decode_tps":
                    if label == "p50":
                        target.tokens_per_s = float(record.get_value())
                else:
                    setattr(target, f"{name}_{label}_ms", float(record.get_value()))
    for table in api.query(render("daily_totals", variables)):
        for record in table.records:
            target = row(record.get_time(), record)
            if record.values.get("result") == "requests":
                count = int(record.get_value())
                target.requests += count
                if record.values.get("status") == "error":
                    target.errors += count
            elif record.get_field() == "cost_usd":
                target.cost_usd += float(record.get_value())
            else:
                target.tokens += int(record.get_value())
    for r in rows.values():
        r.error_rate = r.errors / r.requests if r.requests else 0.0
        r.cost_per_1k_tokens = r.cost_usd / r.tokens * 1000 if r.tokens else None
    ordered = sorted(rows.values(), key=lambda r: (r.day, r.provider, r.model))
    return TrendReport(since, workload, ordered, _comparison(api, variables, ordered))


def _comparison(api: Any, variables: dict[str, Any], rows: list[TrendRow]) -> list[ComparisonRow]:
    by_key: dict[tuple[str, str], ComparisonRow] = {}
    days: dict[tuple[str, str], int] = defaultdict(int)
    tokens: dict[tuple[str, str], int] = defaultdict(int)
    errors: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        key = (r.provider, r.model)
        c = by_key.setdefault(key, ComparisonRow(*key))
        c.requests += r.requests
        c.cost_usd += r.cost_usd
        errors[key] += r.errors
        tokens[key] += r.tokens
        days[key] += 1
    for key, c in by_key.items():
        c.error_rate = errors[key] / c.requests if c.requests else 0.0
        c.cost_per_1k_tokens = c.cost_usd / tokens[key] * 1000 if tokens[key] else None
        c.projected_30d_cost_usd = c.cost_usd / days[key] * 30 if days[key] else 0.0
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        for table in api.query(render("comparison", {**variables, "q": q})):
            for record in table.records:
                key = (record.values["provider"], record.values["model"])
                if key not in by_key:
                    continue
                name = _FIELD_NAMES[record.get_field()]
                value = float(record.get_value())
                if name == "decode_tps":
                    if label == "p50":
                        by_key[key].tokens_per_s = value
                elif hasattr(by_key[key], f"{name}_{label}_ms"):
                    setattr(by_key[key], f"{name}_{label}_ms", value)
    return sorted(by_key.values(), key=lambda c: (c.provider, c.model))


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def report_json(report: TrendReport) -> str:
    document = {
        "since": report.since,
        "workload": report.workload,
        "daily": [{k: _jsonable(v) for k, v in asdict(r).items()} for r in report.rows],
        "comparison": [asdict(c) for c in report.comparison],
    }
    return json.dumps(document, indent=2)


def report_csv(report: TrendReport) -> str:
    """The daily rows as CSV (one header line)."""
    buffer = io.StringIO()
    names = [f.name for f in fields(TrendRow)]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in report.rows:
        writer.writerow({k: _jsonable(v) for k, v in asdict(r).items()})
    return buffer.getvalue()


def plot_report(report: TrendReport, path: Path) -> Path:
    """A 2x2 chart (p95 TTFT, p95 e2e, error rate, cost per 1k tokens per day), one line per provider/model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    series: dict[str, list[TrendRow]] = defaultdict(list)
    for r in report.rows:
        series[f"{r.provider}/{r.model}"].append(r)
    panels = [
        ("ttft_p95_ms", "p95 TTFT (ms)"),
        ("e2e_p95_ms", "p95 end-to-end (ms)"),
        ("error_rate", "error rate"),
        ("cost_per_1k_tokens", "cost per 1k tokens (USD)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    days = sorted({r.day for r in report.rows})
    day_ticks = mdates.DayLocator(interval=max(1, len(days) // 10))  # type: ignore[no-untyped-call]
    for ax, (attr, title) in zip(axes.flat, panels, strict=True):
        for label, items in sorted(series.items()):
            points = [(r.day, getattr(r, attr)) for r in items if getattr(r, attr) is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(day_ticks)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))  # type: ignore[no-untyped-call]
    if days:  # pad by half a day so a single day sits in the middle instead of on an auto-scaled year axis
        pad = timedelta(hours=12)
        axes.flat[0].set_xlim(
            datetime.combine(days[0], datetime.min.time()) - pad, datetime.combine(days[-1], datetime.min.time()) + pad
        )
    axes.flat[0].legend(fontsize="small")
    scope = f" - workload {report.workload}" if report.workload else ""
    fig.suptitle(f"tokenpulse trends, last {report.since}{scope}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""``tokenpulse trends``: per-day latency, error, throughput and cost trends, and a provider comparison.

Percentiles are Flux ``quantile(method: "exact_selector")`` over the raw ``llm_request`` values of each day
(the smallest value with at least q of the points at or below it, numpy's ``inverted_cdf``), of successful
requests only; errors are counted and rated on their own.

The 30-day projection is the cost per hour of the observed period (first to last request of the provider in
the range) times 720, so a 150-second run is projected from 150 seconds, not from "one day with data". When
a production volume is given (requests or tokens per day), the monthly cost at that volume is projected
too, from the observed cost per request or per token, side by side for every provider.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tokenpulse.durations import parse_duration_ns
from tokenpulse.errors import TokenpulseError
from tokenpulse.sinks.flux import render

_FIELD_NAMES = {"ttft_ms": "ttft", "ttfa_ms": "ttfa", "e2e_ms": "e2e", "tpot_ms": "tpot", "decode_tps": "decode_tps"}
HOURS_PER_30_DAYS = 720


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
    ttfa_p50_ms: float | None = None
    ttfa_p95_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p95_ms: float | None = None
    tokens_per_s: float | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    cost_per_1k_tokens: float | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cache_hit_ratio: float | None = None
    reasoning_share: float | None = None


@dataclass
class ComparisonRow:
    """One provider/model over the whole period (for one workload when ``--workload`` is given)."""

    provider: str
    model: str
    requests: int = 0
    error_rate: float = 0.0
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttfa_p50_ms: float | None = None
    ttfa_p95_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None
    tpot_p95_ms: float | None = None
    tokens_per_s: float | None = None
    cost_usd: float = 0.0
    cost_per_1k_tokens: float | None = None
    observed_hours: float = 0.0
    """First to last request of this provider/model in the period."""
    projected_30d_cost_usd: float | None = None
    """Cost per observed hour x 720; null when fewer than two requests span no time."""
    cache_hit_ratio: float | None = None
    reasoning_share: float | None = None
    cost_per_request_usd: float | None = None
    projected_30d_cost_at_volume_usd: float | None = None
    """At the production volume given to ``query_trends`` (requests or tokens per day), else null."""


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
    requests_per_day: float | None = None,
    tokens_per_day: float | None = None,
) -> TrendReport:
    """Run the trend queries with an ``influxdb_client.InfluxDBClient`` and assemble the report.

    ``requests_per_day`` or ``tokens_per_day`` (production volume) adds the monthly cost at that volume.
    """
    if requests_per_day is not None and tokens_per_day is not None:
        raise TrendsError("give --requests-per-day or --tokens-per-day, not both")
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
                name = record.get_field()
                setattr(target, name, getattr(target, name) + int(record.get_value()))
    for r in rows.values():
        r.tokens = r.prompt_tokens + r.completion_tokens
        r.error_rate = r.errors / r.requests if r.requests else 0.0
        r.cost_per_1k_tokens = r.cost_usd / r.tokens * 1000 if r.tokens else None
        r.cache_hit_ratio = r.cached_prompt_tokens / r.prompt_tokens if r.prompt_tokens else None
        r.reasoning_share = r.reasoning_tokens / r.completion_tokens if r.completion_tokens else None
    ordered = sorted(rows.values(), key=lambda r: (r.day, r.provider, r.model))
    comparison = _comparison(api, variables, ordered)
    _project(api, variables, comparison, requests_per_day, tokens_per_day)
    return TrendReport(since, workload, ordered, comparison)


def _project(
    api: Any,
    variables: dict[str, Any],
    comparison: list[ComparisonRow],
    requests_per_day: float | None,
    tokens_per_day: float | None,
) -> None:
    """30-day cost from the observed period's length, and at a production volume when one is given."""
    spans: dict[tuple[str, str], dict[str, datetime]] = defaultdict(dict)
    for table in api.query(render("observed_period", variables)):
        for record in table.records:
            spans[(record.values["provider"], record.values["model"])][record.values["result"]] = record.get_time()
    for c in comparison:
        span = spans.get((c.provider, c.model), {})
        if "first" in span and "last" in span:
            c.observed_hours = (span["last"] - span["first"]).total_seconds() / 3600
        if c.observed_hours > 0:
            c.projected_30d_cost_usd = c.cost_usd / c.observed_hours * HOURS_PER_30_DAYS
        if requests_per_day is not None and c.cost_per_request_usd is not None:
            c.projected_30d_cost_at_volume_usd = c.cost_per_request_usd * requests_per_day * 30
        if tokens_per_day is not None and c.cost_per_1k_tokens is not None:
            c.projected_30d_cost_at_volume_usd = c.cost_per_1k_tokens * tokens_per_day / 1000 * 30


def _comparison(api: Any, variables: dict[str, Any], rows: list[TrendRow]) -> list[ComparisonRow]:
    by_key: dict[tuple[str, str], ComparisonRow] = {}
    sums: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in rows:
        key = (r.provider, r.model)
        c = by_key.setdefault(key, ComparisonRow(*key))
        c.requests += r.requests
        c.cost_usd += r.cost_usd
        sums[key].update(
            errors=r.errors,
            tokens=r.tokens,
            prompt=r.prompt_tokens,
            cached=r.cached_prompt_tokens,
            completion=r.completion_tokens,
            reasoning=r.reasoning_tokens,
        )
    for key, c in by_key.items():
        total = sums[key]
        c.error_rate = total["errors"] / c.requests if c.requests else 0.0
        c.cost_per_1k_tokens = c.cost_usd / total["tokens"] * 1000 if total["tokens"] else None
        c.cost_per_request_usd = c.cost_usd / c.requests if c.requests else None
        c.cache_hit_ratio = total["cached"] / total["prompt"] if total["prompt"] else None
        c.reasoning_share = total["reasoning"] / total["completion"] if total["completion"] else None
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

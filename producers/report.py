"""Terminal tables of a probe run (live view and the closing summary)."""

from __future__ import annotations

from rich.table import Table

from producers.probe import ProbeSummary


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary_table(summary: ProbeSummary, title: str | None = None) -> Table:
    """One row per endpoint: requests, errors, p50/p95 TTFT, p50 decode tokens/s, schedule lag, cost."""
    table = Table(title=title or f"workload {summary.workload} (probe {summary.probe_id})")
    for column in ("endpoint", "requests", "errors", "ttft p50 ms", "ttft p95 ms", "tok/s p50", "lag p99 ms",
                   "cost usd", "error kinds"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("endpoint", "error kinds") else "right")
    for name, ep in summary.endpoints.items():
        kinds = ", ".join(f"{kind}={count}" for kind, count in sorted(ep.error_kinds.items()))
        table.add_row(
            name,
            str(ep.requests),
            f"[red]{ep.errors}[/red]" if ep.errors else "0",
            _fmt(ep.quantile("ttft_ms", 50)),
            _fmt(ep.quantile("ttft_ms", 95)),
            _fmt(ep.quantile("decode_tps", 50)),
            _fmt(ep.quantile("schedule_lag_ms", 99), 2),
            f"{ep.cost_usd:.6f}",
            kinds,
        )
    return table

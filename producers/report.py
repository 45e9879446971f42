"""Terminal tables of a probe run (live view and the closing summary)."""

from __future__ import annotations

from rich.table import Table

from tokenpulse.formatting import format_number
from tokenpulse.producers.adapters.wire import SocketReads
from tokenpulse.producers.probe import ProbeSummary


def _kernel_share(reads: SocketReads | None) -> str:
    """Share of socket reads with the kernel's receive time; yellow below 99% (TTFT then includes loop lag)."""
    if reads is None or not reads.total:
        return "-"
    share = 100 * reads.kernel_stamped / reads.total
    return f"{share:.1f}%" if share >= 99 else f"[yellow]{share:.1f}%[/yellow]"


def summary_table(summary: ProbeSummary, title: str | None = None) -> Table:
    """One row per endpoint: requests, errors, p50/p95 TTFT, p50 decode tokens/s, schedule lag, the share
    of socket reads timed by the kernel, cost."""
    table = Table(title=title or f"workload {summary.workload} (probe {summary.probe_id})")
    for column in (
        "endpoint",
        "requests",
        "errors",
        "ttft p50 ms",
        "ttft p95 ms",
        "tok/s p50",
        "lag p99 ms",
        "kernel stamps",
        "cost usd",
        "error kinds",
    ):
        table.add_column(column, justify="left" if column in ("endpoint", "error kinds") else "right")
    for name, ep in summary.endpoints.items():
        kinds = ", ".join(f"{kind}={count}" for kind, count in sorted(ep.error_kinds.items()))
        table.add_row(
            name,
            str(ep.requests),
            f"[red]{ep.errors}[/red]" if ep.errors else "0",
            format_number(ep.quantile("ttft_ms", 50), 1, grouping=True),
            format_number(ep.quantile("ttft_ms", 95), 1, grouping=True),
            format_number(ep.quantile("decode_tps", 50), 1, grouping=True),
            format_number(ep.quantile("schedule_lag_ms", 99), 2, grouping=True),
            _kernel_share(ep.socket_reads),
            f"{ep.cost_usd:.6f}",
            kinds,
        )
    return table

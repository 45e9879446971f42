"""Terminal tables of a probe run (live view and the closing summary) and of the monitor's live view.

Both render ``EndpointFigures``, the copies the event loop takes (``ProbeSummary.refresh``), so the render
thread never reads or sorts what the loop is changing.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich import box
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
    for name, ep in list(summary.endpoints.items()):
        fig = ep.figures
        kinds = ", ".join(f"{kind}={count}" for kind, count in fig.error_kinds)
        table.add_row(
            name,
            str(fig.requests),
            f"[red]{fig.errors}[/red]" if fig.errors else "0",
            format_number(fig.ttft_p50_ms, 1, grouping=True),
            format_number(fig.ttft_p95_ms, 1, grouping=True),
            format_number(fig.decode_tps_p50, 1, grouping=True),
            format_number(fig.schedule_lag_p99_ms, 2, grouping=True),
            _kernel_share(ep.socket_reads),
            f"{fig.cost_usd:.6f}",
            kinds,
        )
    return table


def monitor_table(summaries: Iterable[ProbeSummary], title: str = "tokenpulse monitor") -> Table:
    """One row per workload and endpoint: p95 TTFT and TTFA, tokens/s, error rate, cost per 1k tokens,
    skipped slots, and "down" while the endpoint's circuit breaker is open."""
    current = list(summaries)
    several = len({s.workload for s in current}) > 1
    if current and not several:
        title = f"{title}: workload {current[0].workload}"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    columns = ("provider", "endpoint", "reqs", "TTFT p95", "TTFA p95", "tok/s", "err", "$/1k tok", "skip")
    for column in columns:
        left = column in ("provider", "endpoint")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    table.caption = "ms; tok/s p50; err: failed share; skip: slots held back after errors"
    for summary in current:
        for name, ep in list(summary.endpoints.items()):
            fig = ep.figures
            rate = fig.error_rate
            provider = ep.provider or name
            table.add_row(
                provider if fig.up else f"{provider} [red]down[/red]",
                f"{summary.workload}/{name}" if several else name,
                str(fig.requests),
                format_number(fig.ttft_p95_ms, 1, grouping=True),
                format_number(fig.ttfa_p95_ms, 1, grouping=True),
                format_number(fig.decode_tps_p50, 1, grouping=True),
                "-" if rate is None else (f"[red]{100 * rate:.1f}%[/red]" if rate else "0%"),
                format_number(fig.cost_per_1k_tokens, 4),
                str(fig.skipped),
            )
    return table

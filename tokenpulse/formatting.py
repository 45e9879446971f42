"""How numbers look in tables and reports: one formatter for every table tokenpulse prints."""

from __future__ import annotations

__all__ = ["format_number"]


def format_number(value: float | None, digits: int = 1, *, grouping: bool = False) -> str:
    """``value`` with ``digits`` decimals (thousands separated when ``grouping``); ``-`` for no value."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if grouping else f"{value:.{digits}f}"

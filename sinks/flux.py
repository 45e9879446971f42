"""Loading the ``.flux`` files of ``sinks/queries`` and binding their variables safely.

Each file documents the variables it uses; ``render`` prepends them as Flux declarations, with strings
escaped, so no caller value is ever spliced into the query text itself.
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources

FluxValue = str | int | float | bool | datetime


def load_query(name: str) -> str:
    """The text of ``sinks/queries/<name>.flux``."""
    return resources.files("tokenpulse.sinks").joinpath("queries", f"{name}.flux").read_text()


def flux_literal(value: FluxValue) -> str:
    """A Flux literal: strings quoted and escaped, datetimes as RFC 3339 time literals."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("Flux times must be timezone-aware")
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def render(name: str, variables: dict[str, FluxValue], header: str = "") -> str:
    """``header`` + variable declarations + the query file ``name``."""
    declarations = "\n".join(f"{key} = {flux_literal(value)}" for key, value in variables.items())
    return f"{header}{declarations}\n\n{load_query(name)}"

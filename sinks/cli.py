"""Commands of the sinks package, registered on the main `tokenpulse` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""

"""``tokenpulse demo``: the whole pipeline on this machine."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from stack.native import NativeStack
from tokenpulse.config import default_cache, default_home


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(home: Path | None = typer.Option(None, help="stack state dir")) -> None:
        """Bring the local stack up and show its status (later: the full pipeline with a regression)."""
        console = Console()
        stack = NativeStack(home or default_home(), default_cache(), say=console.print)
        status = stack.up()
        console.print_json(data=status.as_json())

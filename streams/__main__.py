"""``python -m streams [OPTIONS]``: the ``tokenpulse worker`` command without the rest of the CLI."""

from __future__ import annotations

import sys

import typer

from tokenpulse.config import ConfigError
from tokenpulse.errors import TokenpulseError
from tokenpulse.streams.cli import worker


def main() -> None:
    try:
        typer.run(worker)
    except (ConfigError, TokenpulseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

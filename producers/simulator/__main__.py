"""``python -m producers.simulator CONFIG_JSON`` serves a simulator and prints its base URL on stdout.

Used by benchmarks and tests that want the simulator in its own process (no GIL shared with the probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from tokenpulse.producers.simulator.profiles import SimulatorConfig, default_config
from tokenpulse.producers.simulator.server import serve_forever


def main() -> None:
    config = SimulatorConfig.model_validate_json(sys.argv[1]) if len(sys.argv) > 1 else default_config()

    def ready(base_url: str) -> None:
        print(base_url, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        # uvloop, like the probe: the simulator's own event-loop overhead delays its ground-truth stamps.
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            asyncio.run(serve_forever(config, "127.0.0.1", 0, ready))
        else:
            uvloop.run(serve_forever(config, "127.0.0.1", 0, ready))


if __name__ == "__main__":
    main()

"""Open-loop schedule lag at 50 requests/s against the simulator (target: p99 <= 5 ms).

Baseline in the same run: the same Poisson schedule with no requests at all, i.e. how late the event loop
wakes up by itself. Run: .venv/bin/python bench/probe_schedule_lag.py [seconds]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from probe_common import probe, quantiles, workload

from producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from producers.timing import percentile

RATE = 50.0


async def bare_timer_lag(n: int) -> list[float]:
    rng = random.Random(5)
    lags = []
    planned = time.monotonic_ns()
    for _ in range(n):
        planned += int(rng.expovariate(RATE) * 1e9)
        delay = planned - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        lags.append((time.monotonic_ns() - planned) / 1e6)
    return lags


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    n = int(RATE * seconds)
    config = SimulatorConfig(endpoints={"sim": LatencyProfile(ttft_ms=50, ttft_p95_ms=120, tokens_per_s=300)})
    with SimulatorProcess(config) as sim:
        events = probe(workload(sim.endpoint_url("sim"), n, {"kind": "open", "rate_per_s": RATE, "seed": 3}, 32))
    lags = [e.schedule_lag_ms for e in events if e.schedule_lag_ms is not None]
    baseline = asyncio.run(bare_timer_lag(n))
    errors = sum(e.status == "error" for e in events)
    print(f"open loop {RATE:g} req/s for {seconds:g} s: {len(events)} requests, {errors} errors")
    print(f"probe schedule lag ms     : {quantiles(lags)}")
    print(f"bare timer wake-up lag ms : {quantiles(baseline)}")
    p99, base99 = percentile(sorted(lags), 99), percentile(sorted(baseline), 99)
    print(
        f"lag p99 ratio probe/bare timer: {p99 / base99:.2f}x; target p99 <= 5 ms: {'met' if p99 <= 5 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

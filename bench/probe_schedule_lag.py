"""Open-loop schedule lag at 50 requests/s against the simulator (target: p99 <= 5 ms).

Schedule lag is the probe's send stamp (headers going onto the connection) minus the planned Poisson time.
Baselines in the same run, same seed, same event loop:
- ``timer``: the schedule with no requests, woken by a plain ``asyncio.sleep`` (how late the loop wakes);
- ``precise timer``: the same woken by ``producers.scheduler.sleep_until`` (the probe's wait): the floor
  this machine's scheduler allows;
- ``bare httpx``: an open loop of plain ``client.stream`` requests, lag stamped when its task starts.
Each repetition runs all four; the figures are the medians over repetitions.
Run: .venv/bin/python bench/probe_schedule_lag.py [seconds] [--reps N] [--loop asyncio] [--kafka]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
from probe_common import common_args, kafka_publisher, median, pct, probe, workload

from tokenpulse.producers import scheduler
from tokenpulse.producers.probe import run_async
from tokenpulse.producers.scheduler import sleep_until
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess

RATE = 50.0
SEED = 3


def planned_offsets(n: int) -> list[int]:
    rng = random.Random(SEED)
    return [int(rng.expovariate(RATE) * 1e9) for _ in range(n)]


async def timer_lag(n: int, wait: Callable[[int], Awaitable[None]]) -> list[float]:
    lags = []
    planned = time.monotonic_ns() + 5_000_000
    for gap in planned_offsets(n):
        planned += gap
        await wait(planned)
        lags.append((time.monotonic_ns() - planned) / 1e6)
    return lags


async def plain_sleep(deadline_ns: int) -> None:
    delay = deadline_ns - time.monotonic_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)


async def bare_httpx_lag(url: str, n: int) -> list[float]:
    body = {"model": "sim", "messages": [{"role": "user", "content": "x " * 50}], "max_tokens": 32, "stream": True}
    lags: list[float] = []

    async def one(client: httpx.AsyncClient, planned: int) -> None:
        lags.append((time.monotonic_ns() - planned) / 1e6)
        async with client.stream("POST", url + "/chat/completions", json=body) as response:
            async for _ in response.aiter_bytes():
                pass

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1000)) as client:
        tasks = set()
        planned = time.monotonic_ns() + 5_000_000
        for gap in planned_offsets(n):
            planned += gap
            await plain_sleep(planned)
            task = asyncio.create_task(one(client, planned))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return lags


def main() -> None:
    parser = common_args(__doc__ or "", default_reps=3)
    parser.add_argument("seconds", type=float, nargs="?", default=10.0)
    parser.add_argument("--spin-us", type=int, default=None, help="the scheduler's SPIN_NS in microseconds")
    args = parser.parse_args()
    if args.spin_us is not None:
        scheduler.SPIN_NS = args.spin_us * 1000
    n = int(RATE * args.seconds)
    config = SimulatorConfig(endpoints={"sim": LatencyProfile(ttft_ms=50, ttft_p95_ms=120, tokens_per_s=300)})
    sides = ("timer", "precise timer", "bare httpx", "probe")
    p99: dict[str, list[float]] = {side: [] for side in sides}
    p50: dict[str, list[float]] = {side: [] for side in sides}
    previous = sys.getswitchinterval()
    with SimulatorProcess(config) as sim, kafka_publisher(args.kafka) as publisher:
        url = sim.endpoint_url("sim")
        for rep in range(args.reps):
            runs: dict[str, Callable[[], list[float]]] = {
                "timer": lambda: run_async(timer_lag(n, plain_sleep), args.loop),
                "precise timer": lambda: run_async(timer_lag(n, sleep_until), args.loop),
                "bare httpx": lambda: run_async(bare_httpx_lag(url, n), args.loop),
            }
            for side, run in runs.items():
                lags = run()
                p50[side].append(pct(lags, 50))
                p99[side].append(pct(lags, 99))
            schedule = {"kind": "open", "rate_per_s": RATE, "seed": SEED}
            if args.switch_interval is not None:
                sys.setswitchinterval(args.switch_interval)
            try:
                events = probe(workload(url, n, schedule, 32), args.loop, publisher)
            finally:
                sys.setswitchinterval(previous)
            lags = [e.schedule_lag_ms for e in events if e.schedule_lag_ms is not None]
            errors = sum(e.status == "error" for e in events)
            p50["probe"].append(pct(lags, 50))
            p99["probe"].append(pct(lags, 99))
            print(
                f"rep {rep + 1}: probe {len(events)} requests, {errors} errors; lag p99 ms "
                + ", ".join(f"{side} {p99[side][-1]:.3f}" for side in sides),
                flush=True,
            )
    switch = args.switch_interval or previous
    print(
        f"open loop {RATE:g} req/s for {args.seconds:g} s x {args.reps} repetitions, event loop {args.loop}, "
        f"kafka {'on' if args.kafka else 'off'}, spin {scheduler.SPIN_NS // 1000} us, switch interval {switch:g} s"
    )
    for side in sides:
        print(f"{side:<14} schedule lag ms: median p50 {median(p50[side]):.3f}  median p99 {median(p99[side]):.3f}")
    probe99 = median(p99["probe"])
    for base in ("precise timer", "timer", "bare httpx"):
        ratios = [p / b for p, b in zip(p99["probe"], p99[base], strict=True)]
        print(f"lag p99 probe / {base}: median {median(ratios):.2f}x")
    print(f"target p99 <= 5 ms: {'met' if probe99 <= 5 else 'NOT met'} (median p99 {probe99:.3f} ms)")


if __name__ == "__main__":
    main()

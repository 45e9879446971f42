"""Timing accuracy of the probe against the simulator's ground truth, on loopback.

Targets: |measured - true TTFT| p99 <= 1 ms and ITL p95 error <= 1 ms. The baseline is a bare httpx
streaming loop (stamp before the request, stamp the first content line) over the same simulator. The
probe's arrival times and the simulator's request arrival (where true TTFT starts) are both the kernel's
receive timestamps; the probe sends before the simulator receives and receives after the simulator
wrote, so measured TTFT should never be below the true one: the smallest signed difference is printed
as a check of the clock conversion.
Run: .venv/bin/python bench/probe_accuracy.py [requests] [--reps N] [--concurrency N] [--loop asyncio] [--kafka]
"""

from __future__ import annotations

import sys
import time
import uuid

import httpx
import orjson
from probe_common import common_args, kafka_publisher, median, pct, probe, quantiles, workload

from tokenpulse.producers.probe import run_async
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from tokenpulse.producers.timing import percentile


async def bare_loop(url: str, n: int) -> dict[str, float]:
    measured: dict[str, float] = {}
    body = {"model": "sim", "messages": [{"role": "user", "content": "x " * 50}], "max_tokens": 32, "stream": True}
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(n):
            request_id = uuid.uuid4().hex
            sent = time.monotonic_ns()
            async with client.stream(
                "POST", url + "/chat/completions", json=body, headers={"X-Tokenpulse-Request-Id": request_id}
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and orjson.loads(line[6:]).get("choices", [{}])[0].get(
                        "delta", {}
                    ).get("content"):
                        measured[request_id] = (time.monotonic_ns() - sent) / 1e6
                        break
    return measured


def main() -> None:
    parser = common_args(__doc__ or "", default_reps=3)
    parser.add_argument("requests", type=int, nargs="?", default=300)
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop streams open at once")
    args = parser.parse_args()
    n = args.requests
    config = SimulatorConfig(
        endpoints={"sim": LatencyProfile(ttft_ms=30, ttft_p95_ms=60, tokens_per_s=200, jitter=0.3)}
    )
    sides = ("probe ttft", "probe itl p95", "bare ttft")
    p99: dict[str, list[float]] = {side: [] for side in sides}
    previous = sys.getswitchinterval()
    with SimulatorProcess(config) as sim, kafka_publisher(args.kafka) as publisher:
        for rep in range(args.reps):
            if args.switch_interval is not None:
                sys.setswitchinterval(args.switch_interval)
            try:
                w = workload(sim.endpoint_url("sim"), n, {"kind": "closed", "concurrency": args.concurrency}, 32)
                events = probe(w, args.loop, publisher)
            finally:
                sys.setswitchinterval(previous)
            bare = run_async(bare_loop(sim.endpoint_url("sim"), min(n, 150)), args.loop)
            truth = sim.ground_truth()
            ttft_err, itl_err, signed = [], [], []
            for e in events:
                t = truth[str(e.event_id)]
                signed.append(e.ttft_ms - t["ttft_ms"])  # type: ignore[operator]
                ttft_err.append(abs(signed[-1]))
                gaps = sorted((b - a) / 1e6 for a, b in zip(t["content_ns"], t["content_ns"][1:], strict=False))
                itl_err.append(abs(e.itl_p95_ms - percentile(gaps, 95)))  # type: ignore[operator]
            bare_err = [abs(ms - truth[rid]["ttft_ms"]) for rid, ms in bare.items()]
            for side, values in zip(sides, (ttft_err, itl_err, bare_err), strict=True):
                p99[side].append(pct(values, 99))
            print(
                f"rep {rep + 1}: probe {len(events)} requests (closed loop, concurrency {args.concurrency}), "
                f"bare {len(bare_err)} (sequential); |TTFT error| {quantiles(ttft_err)}; bare {quantiles(bare_err)}; "
                f"probe measured - true: min {min(signed):+.3f} (a negative one would be a clock error)"
            )
    print(f"{args.reps} repetitions, event loop {args.loop}, kafka {'on' if args.kafka else 'off'}")
    for side in sides:
        print(f"{side:<14} |error| ms: median p99 {median(p99[side]):.3f}")
    ratios = [p / b for p, b in zip(p99["probe ttft"], p99["bare ttft"], strict=True)]
    print(f"TTFT error p99 ratio probe/bare: median {median(ratios):.2f}x")
    print(
        f"targets: TTFT p99 <= 1 ms: {'met' if median(p99['probe ttft']) <= 1 else 'NOT met'}; "
        f"ITL p95 error p99 <= 1 ms: {'met' if median(p99['probe itl p95']) <= 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

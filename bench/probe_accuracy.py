"""Timing accuracy of the probe against the simulator's ground truth, on loopback.

Targets: |measured - true TTFT| p99 <= 1 ms and ITL p95 error <= 1 ms, on a plain profile and on a reasoning
profile (40 reasoning tokens in ``delta.reasoning_content`` before the answer), where TTFA (first answer token)
is checked too. The baseline is a bare httpx streaming loop (stamp before the request, stamp the first
content line: TTFT on the plain profile, TTFA on the reasoning one) over the same simulator. The
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
    plain = LatencyProfile(ttft_ms=30, ttft_p95_ms=60, tokens_per_s=200, jitter=0.3)
    reasoning = plain.model_copy(update={"reasoning_tokens": 40, "reasoning_tokens_per_s": 400})
    config = SimulatorConfig(endpoints={"sim": plain, "think": reasoning})
    sides = (
        "plain: probe ttft",
        "plain: probe itl p95",
        "plain: bare ttft",
        "reasoning: probe ttft",
        "reasoning: probe ttfa",
        "reasoning: probe itl p95",
        "reasoning: bare ttfa",
    )
    p99: dict[str, list[float]] = {side: [] for side in sides}
    previous = sys.getswitchinterval()
    with SimulatorProcess(config) as sim, kafka_publisher(args.kafka) as publisher:
        for rep in range(args.reps):
            for name, label in (("sim", "plain"), ("think", "reasoning")):
                if args.switch_interval is not None:
                    sys.setswitchinterval(args.switch_interval)
                try:
                    schedule = {"kind": "closed", "concurrency": args.concurrency}
                    events = probe(workload(sim.endpoint_url(name), n, schedule, 32), args.loop, publisher)
                finally:
                    sys.setswitchinterval(previous)
                bare = run_async(bare_loop(sim.endpoint_url(name), min(n, 150)), args.loop)
                truth = sim.ground_truth()
                ttft_err, ttfa_err, itl_err, signed = [], [], [], []
                for e in events:
                    t = truth[str(e.event_id)]
                    signed.append(e.ttft_ms - t["ttft_ms"])  # type: ignore[operator]
                    ttft_err.append(abs(signed[-1]))
                    ttfa_err.append(abs(e.ttfa_ms - t["ttfa_ms"]))  # type: ignore[operator]
                    gaps = sorted((b - a) / 1e6 for a, b in zip(t["token_ns"], t["token_ns"][1:], strict=False))
                    itl_err.append(abs(e.itl_p95_ms - percentile(gaps, 95)))  # type: ignore[operator]
                # The bare loop stamps the first content chunk: the true TTFA (= TTFT without reasoning).
                bare_err = [abs(ms - truth[rid]["ttfa_ms"]) for rid, ms in bare.items()]
                if label == "plain":
                    figures = {"probe ttft": ttft_err, "probe itl p95": itl_err, "bare ttft": bare_err}
                else:
                    figures = {
                        "probe ttft": ttft_err,
                        "probe ttfa": ttfa_err,
                        "probe itl p95": itl_err,
                        "bare ttfa": bare_err,
                    }
                for side, values in figures.items():
                    p99[f"{label}: {side}"].append(pct(values, 99))
                print(
                    f"rep {rep + 1} {label}: probe {len(events)} requests (closed loop, concurrency "
                    f"{args.concurrency}), bare {len(bare_err)} (sequential); |TTFT error| {quantiles(ttft_err)}; "
                    f"|TTFA error| {quantiles(ttfa_err)}; bare {quantiles(bare_err)}; "
                    f"probe measured - true: min {min(signed):+.3f} (a negative one would be a clock error)"
                )
    print(f"{args.reps} repetitions, event loop {args.loop}, kafka {'on' if args.kafka else 'off'}")
    for side in sides:
        print(f"{side:<26} |error| ms: median p99 {median(p99[side]):.3f}")
    for label, first in (("plain", "ttft"), ("reasoning", "ttfa")):
        ratios = [p / b for p, b in zip(p99[f"{label}: probe {first}"], p99[f"{label}: bare {first}"], strict=True)]
        print(f"{label}: {first.upper()} error p99 ratio probe/bare: median {median(ratios):.2f}x")
    checks = [side for side in sides if "probe" in side]
    verdicts = ", ".join(f"{side} {'met' if median(p99[side]) <= 1 else 'NOT met'}" for side in checks)
    print(f"targets (p99 <= 1 ms): {verdicts}")


if __name__ == "__main__":
    main()

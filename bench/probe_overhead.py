"""Probe CPU overhead versus bare httpx streaming loops over the same simulated stream, in one run.

Every side sends the same requests sequentially to a simulator process (no TTFT, fast tokens) on the same
event loop, and the CPU time of this process is measured per request and per streamed token. Baselines:
- ``bare lines``: ``client.stream`` + ``aiter_lines``, reading every line and doing nothing with it;
- ``bare timing``: the least a timing client must do: stamp and ``orjson.loads`` every ``data:`` line
  and take the first content (what vLLM ``bench serve`` and llmperf do per chunk).
Sides alternate within each repetition; the figures are the medians of the per-repetition ratios.
Target: probe <= 1.2x the bare loop. Run: .venv/bin/python bench/probe_overhead.py [requests] [--reps N]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from probe_common import common_args, median, probe, workload

from tokenpulse.producers.probe import run_async
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess

TOKENS = 64
BODY = {
    "model": "sim",
    "messages": [{"role": "user", "content": "x " * 50}],
    "max_tokens": TOKENS,
    "stream": True,
    "stream_options": {"include_usage": True},
}


async def bare_lines(url: str, n: int) -> int:
    lines = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(n):
            async with client.stream("POST", url + "/chat/completions", json=BODY) as response:
                async for line in response.aiter_lines():
                    lines += bool(line)
    return lines


async def bare_timing(url: str, n: int) -> int:
    clock = time.monotonic_ns
    contents = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(n):
            sent, stamps = clock(), []
            async with client.stream("POST", url + "/chat/completions", json=BODY) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        now = clock()
                        chunk = orjson.loads(line[6:])
                        choices = chunk.get("choices")
                        if choices and choices[0]["delta"].get("content"):
                            stamps.append(now - sent)
            contents += len(stamps)
    return contents


def cpu(run: Callable[[], Any]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def main() -> None:
    parser = common_args(__doc__ or "", default_reps=5)
    parser.add_argument("requests", type=int, nargs="?", default=300)
    args = parser.parse_args()
    n = args.requests
    profile = LatencyProfile(ttft_ms=0, tokens_per_s=1_000_000, jitter=0, role_chunk=True)
    cpu_s: dict[str, list[float]] = {"bare lines": [], "bare timing": [], "probe": []}
    with SimulatorProcess(SimulatorConfig(endpoints={"sim": profile})) as sim:
        url = sim.endpoint_url("sim")
        run_async(bare_lines(url, 10), args.loop)  # warm-up of imports and the simulator
        probe(workload(url, 10, {"kind": "closed", "concurrency": 1}, TOKENS, warmup=0), args.loop)
        for _ in range(args.reps):
            cpu_s["bare lines"].append(cpu(lambda: run_async(bare_lines(url, n), args.loop)))
            cpu_s["bare timing"].append(cpu(lambda: run_async(bare_timing(url, n), args.loop)))
            w = workload(url, n, {"kind": "closed", "concurrency": 1}, TOKENS, warmup=0)
            events: list[Any] = []
            cpu_s["probe"].append(cpu(lambda: events.extend(probe(w, args.loop))))  # noqa: B023
            assert len(events) == n and all(e.completion_tokens == TOKENS for e in events)
    print(f"{n} requests x {TOKENS} tokens, sequential, event loop {args.loop}, {args.reps} repetitions (medians)")
    for side, values in cpu_s.items():
        m = median(values)
        print(
            f"{side:<12}: {m / n * 1e3:.3f} ms CPU/request, {m / (n * TOKENS) * 1e6:.1f} us CPU/token"
            f"  (runs: {', '.join(f'{v:.3f}' for v in values)} s)"
        )
    for base in ("bare timing", "bare lines"):
        ratios = [p / b for p, b in zip(cpu_s["probe"], cpu_s[base], strict=True)]
        print(
            f"probe / {base} CPU ratio: median {median(ratios):.2f}x "
            f"(per repetition: {', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.2x)"
        )


if __name__ == "__main__":
    main()

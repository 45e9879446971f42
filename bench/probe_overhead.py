"""Probe CPU overhead versus a bare httpx streaming loop over the same simulated stream, in one run.

Both loops send the same requests sequentially to a simulator process (no TTFT, fast tokens) and the CPU
time of this process is measured per request and per streamed token. Target: probe <= 1.2x bare.
Run: .venv/bin/python bench/probe_overhead.py [requests]
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
from probe_common import probe, workload

from producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess

TOKENS = 64


async def bare_loop(url: str, n: int) -> int:
    body = {"model": "sim", "messages": [{"role": "user", "content": "x " * 50}], "max_tokens": TOKENS,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    lines = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(n):
            async with client.stream("POST", url + "/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    lines += bool(line)
    return lines


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    profile = LatencyProfile(ttft_ms=0, tokens_per_s=1_000_000, jitter=0, role_chunk=True)
    with SimulatorProcess(SimulatorConfig(endpoints={"sim": profile})) as sim:
        url = sim.endpoint_url("sim")
        results: dict[str, list[float]] = {"bare": [], "probe": []}
        asyncio.run(bare_loop(url, 10))  # warm-up of imports and the simulator
        for _ in range(3):  # alternate to spread machine noise over both
            start = time.process_time()
            asyncio.run(bare_loop(url, n))
            results["bare"].append(time.process_time() - start)
            start = time.process_time()
            events = probe(workload(url, n, {"kind": "closed", "concurrency": 1}, TOKENS, warmup=0))
            results["probe"].append(time.process_time() - start)
            assert len(events) == n and all(e.completion_tokens == TOKENS for e in events)
    bare, probed = min(results["bare"]), min(results["probe"])
    print(f"{n} requests x {TOKENS} tokens, sequential, best of 3 runs each")
    print(f"bare httpx loop : {bare / n * 1e3:.3f} ms CPU/request, {bare / (n * TOKENS) * 1e6:.1f} us CPU/token")
    print(f"probe           : {probed / n * 1e3:.3f} ms CPU/request, {probed / (n * TOKENS) * 1e6:.1f} us CPU/token")
    print(f"probe / bare CPU ratio: {probed / bare:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()

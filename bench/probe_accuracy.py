"""Timing accuracy of the probe against the simulator's ground truth, on loopback.

Targets: |measured - true TTFT| p99 <= 1 ms and ITL p95 error <= 1 ms. The baseline is a bare httpx
streaming loop (stamp before the request, stamp the first content line) over the same simulator.
Run: .venv/bin/python bench/probe_accuracy.py [requests]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import httpx
import orjson
from probe_common import probe, quantiles, workload

from producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from producers.timing import percentile


async def bare_loop(url: str, n: int) -> dict[str, float]:
    measured: dict[str, float] = {}
    body = {"model": "sim", "messages": [{"role": "user", "content": "x " * 50}], "max_tokens": 32, "stream": True}
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(n):
            request_id = uuid.uuid4().hex
            sent = time.monotonic_ns()
            async with client.stream("POST", url + "/chat/completions", json=body,
                                     headers={"X-Tokenpulse-Request-Id": request_id}) as response:  # fmt: skip
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and orjson.loads(line[6:]).get("choices", [{}])[0].get(
                        "delta", {}
                    ).get("content"):
                        measured[request_id] = (time.monotonic_ns() - sent) / 1e6
                        break
    return measured


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    config = SimulatorConfig(
        endpoints={"sim": LatencyProfile(ttft_ms=30, ttft_p95_ms=60, tokens_per_s=200, jitter=0.3)}
    )
    with SimulatorProcess(config) as sim:
        events = probe(workload(sim.endpoint_url("sim"), n, {"kind": "closed", "concurrency": 4}, 32))
        truth = sim.ground_truth()
        bare = asyncio.run(bare_loop(sim.endpoint_url("sim"), min(n, 150)))
        truth = sim.ground_truth()
    ttft_err, itl_err = [], []
    for e in events:
        t = truth[str(e.event_id)]
        ttft_err.append(abs(e.ttft_ms - t["ttft_ms"]))  # type: ignore[operator]
        gaps = sorted((b - a) / 1e6 for a, b in zip(t["content_ns"], t["content_ns"][1:], strict=False))
        itl_err.append(abs(e.itl_p95_ms - percentile(gaps, 95)))  # type: ignore[operator]
    bare_err = [abs(ms - truth[rid]["ttft_ms"]) for rid, ms in bare.items()]
    print(f"requests: probe {len(events)} (closed loop, concurrency 4), bare httpx loop {len(bare_err)} (sequential)")
    print(f"probe |TTFT error| ms      : {quantiles(ttft_err)}")
    print(f"probe |ITL p95 error| ms   : {quantiles(itl_err)}")
    print(f"bare  |TTFT error| ms      : {quantiles(bare_err)}")
    p99_probe, p99_bare = percentile(sorted(ttft_err), 99), percentile(sorted(bare_err), 99)
    print(f"TTFT error p99 ratio probe/bare: {p99_probe / p99_bare:.2f}x")
    print(f"targets: TTFT p99 <= 1 ms: {'met' if p99_probe <= 1 else 'NOT met'}; "
          f"ITL p95 error p95 <= 1 ms: {'met' if percentile(sorted(itl_err), 95) <= 1 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()

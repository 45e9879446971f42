"""Shared helpers of the probe benchmarks (the simulator runs in its own process)."""

from __future__ import annotations

import asyncio
from typing import Any

from producers.probe import run_workload_async
from producers.timing import percentile
from producers.workload import parse_workload
from schemas import RequestTiming


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


def workload(base_url: str, requests: int, schedule: dict[str, Any], output_tokens: int, warmup: int = 4) -> Any:
    return parse_workload({
        "name": "bench", "requests": requests, "schedule": schedule, "warmup_requests": warmup,
        "prompts": {"synthetic": {"count": 8, "input_tokens": 50, "output_tokens": output_tokens}},
        "endpoints": [{"name": "sim", "kind": "openai", "base_url": base_url, "model": "sim"}],
        "timeouts": {"connect_s": 5, "first_token_s": 30, "total_s": 60},
    })  # fmt: skip


def probe(w: Any) -> list[RequestTiming]:
    sink = ListSink()
    asyncio.run(run_workload_async(w, sink, api_keys={}))
    return sink.events


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    return (f"p50 {percentile(ordered, 50):.3f}  p95 {percentile(ordered, 95):.3f}  "
            f"p99 {percentile(ordered, 99):.3f}  max {ordered[-1]:.3f}")  # fmt: skip

"""Probe CPU per streamed token against a real engine (llama.cpp's llama-server), next to a bare httpx loop.

Both sides send the same requests sequentially to the same llama-server (Gemma 3 270M on this CPU) and the
CPU time of this process (not the engine's) is divided by the content chunks streamed (one token each):
- ``bare timing``: ``client.stream`` + ``aiter_lines``, stamping and ``orjson.loads`` of every ``data:`` line
  (the least a timing client does);
- ``probe``: ``run_workload_async`` with its own connections, SSE parser, events and server timings.
Sides alternate within each repetition; the figure is the median of the per-repetition ratios (no absolute
target: the engine paces the tokens, so this is the probe's cost at a real server's pace).
Engine: ``TOKENPULSE_LLM_BASE_URL`` (``eval "$(tokenpulse stack env)"`` after ``stack up --with-llm``), else a
private one is started from the cache (built on first use).
Run: .venv/bin/python bench/probe_cpu_real_engine.py [requests] [--reps N]
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from probe_common import common_args, median, probe

from tokenpulse.config import default_cache
from tokenpulse.producers.probe import run_async
from tokenpulse.producers.workload import parse_workload
from tokenpulse.stack.native import NativeStack

TOKENS = 64
PROMPT = "Write a long story about a lighthouse keeper and the sea."


@contextlib.contextmanager
def engine() -> Iterator[tuple[str, str]]:
    """``(base_url, model)`` of a running llama-server."""
    if base_url := os.environ.get("TOKENPULSE_LLM_BASE_URL"):
        yield base_url, os.environ.get("TOKENPULSE_LLM_MODEL", "local")
        return
    with tempfile.TemporaryDirectory() as home:
        stack = NativeStack(Path(home), default_cache(), say=print)
        try:
            conn = stack.up(["llm"]).connection["llm"]
            yield conn["base_url"], conn["model"]
        finally:
            stack.down()


def body(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def bare_timing(url: str, model: str, n: int) -> int:
    clock = time.monotonic_ns
    contents = 0
    payload = body(model)
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(n):
            for attempt in (1, 2):
                sent, stamps = clock(), []
                try:
                    async with client.stream("POST", url + "/chat/completions", json=payload) as response:
                        async for line in response.aiter_lines():
                            if line.startswith("data: ") and line != "data: [DONE]":
                                now = clock()
                                chunk = orjson.loads(line[6:])
                                choices = chunk.get("choices")
                                if choices and choices[0]["delta"].get("content"):
                                    stamps.append(now - sent)
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    # llama-server closes kept-alive connections now and then; send once more, as the probe does
                    if attempt == 2 or stamps:
                        raise
                    continue
                break
            contents += len(stamps)
    return contents


def engine_workload(url: str, model: str, n: int) -> Any:
    return parse_workload(
        {
            "name": "bench-real-engine",
            "requests": n,
            "schedule": {"kind": "closed", "concurrency": 1},
            "prompts": {"inline": [PROMPT]},
            "max_tokens": TOKENS,
            "endpoints": [{"name": "llama", "kind": "openai", "base_url": url, "model": model}],
            "timeouts": {"connect_s": 5, "first_token_s": 60, "total_s": 120},
        }
    )


def cpu(run: Callable[[], int]) -> tuple[float, int]:
    start = time.process_time()
    tokens = run()
    return time.process_time() - start, tokens


def main() -> None:
    parser = common_args(__doc__ or "", default_reps=3)
    parser.add_argument("requests", type=int, nargs="?", default=30)
    args = parser.parse_args()
    n = args.requests
    per_token: dict[str, list[float]] = {"bare timing": [], "probe": []}
    with engine() as (url, model):
        run_async(bare_timing(url, model, 2), args.loop)  # warm-up: imports, the engine's prompt cache

        def probe_side() -> int:
            events = probe(engine_workload(url, model, n), args.loop)
            assert all(e.status == "ok" for e in events), [e.error_detail for e in events if e.status != "ok"]
            return sum(e.completion_tokens for e in events)

        for _ in range(args.reps):
            seconds, tokens = cpu(lambda: run_async(bare_timing(url, model, n), args.loop))
            per_token["bare timing"].append(seconds / max(tokens, 1))
            seconds, tokens = cpu(probe_side)
            per_token["probe"].append(seconds / max(tokens, 1))
    print(f"{n} requests x up to {TOKENS} tokens from llama-server {url}, sequential, {args.reps} repetitions")
    for side, values in per_token.items():
        runs = ", ".join(f"{v * 1e6:.1f}" for v in values)
        print(f"{side:<12}: {median(values) * 1e6:.1f} us CPU/token  (runs: {runs})")
    ratios = [p / b for p, b in zip(per_token["probe"], per_token["bare timing"], strict=True)]
    print(f"probe / bare timing CPU per token: median {median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()

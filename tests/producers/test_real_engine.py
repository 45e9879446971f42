"""The probe against a real inference engine: llama.cpp's ``llama-server`` serving Gemma 3 270M on this CPU.

The simulator gives exact ground truth; the engine gives what real servers do (one-token chunks after a
role-only first chunk, prompt caching, CPU contention, keep-alive connections closed by the server) and
its own account of each request (``timings``, ``/metrics``), which the events are checked against.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid

import pytest

from tokenpulse.producers.probe import ProbeSummary, run_workload_async
from tokenpulse.producers.workload import Workload, parse_workload
from tokenpulse.schemas import RequestTiming, decode, encode
from tokenpulse.stack.llm import metrics
from tokenpulse.testing.services import LlmEndpoint

pytestmark = [pytest.mark.real_engine, pytest.mark.integration]

_WORDS = "river stone lantern orbit maple signal harbor copper meadow violet canyon ember".split()  # noqa: SIM905


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


def prose(words: int, nonce: str) -> str:
    """A prompt of about ``words`` words that starts with ``nonce`` (so no earlier request shares its prefix)."""
    body = " ".join(_WORDS[(i * 7 + len(nonce)) % len(_WORDS)] for i in range(words))
    return f"[{nonce}] Continue this story: {body}"


def engine_workload(
    llm: LlmEndpoint,
    prompts: list[str],
    *,
    concurrency: int = 1,
    requests: int = 20,
    max_tokens: int = 48,
    name: str = "real-engine",
) -> Workload:
    return parse_workload(
        {
            "name": name,
            "endpoints": [
                {
                    "name": "llama",
                    "kind": "openai",
                    "provider": "llama.cpp-local",
                    "base_url": llm.base_url,
                    "model": llm.model,
                    "region": "local",
                }
            ],
            "prompts": {"inline": prompts},
            "max_tokens": max_tokens,
            "schedule": {"kind": "closed", "concurrency": concurrency},
            "requests": requests,
            "timeouts": {"connect_s": 5, "first_token_s": 60, "total_s": 120},
        }
    )


def probe(workload: Workload) -> tuple[list[RequestTiming], ProbeSummary]:
    sink = ListSink()
    summary = asyncio.run(run_workload_async(workload, sink, api_keys={}))
    return sink.events, summary


def test_events_agree_with_the_engines_own_account(llm_engine: LlmEndpoint) -> None:
    run = uuid.uuid4().hex[:8]
    prompts = [prose(40, f"{run}-{n}") for n in range(20)]
    before = metrics(llm_engine.origin)
    events, _summary = probe(engine_workload(llm_engine, prompts, requests=20, max_tokens=48))
    after = metrics(llm_engine.origin)

    assert len(events) == 20
    assert [e.error_detail for e in events if e.status != "ok"] == []
    for event in events:
        assert decode(RequestTiming, encode(event)) == event
        assert event.token_count_source == "usage"
        assert event.server_prefill_ms is not None and event.server_decode_ms is not None
        assert event.ttft_ms is not None and event.ttft_ms > event.server_prefill_ms

    # The engine's counters advance by exactly the tokens the events report.
    predicted = after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"]
    assert predicted == sum(e.completion_tokens for e in events)
    processed = after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"]
    assert processed == sum(e.prompt_tokens - (e.server_cached_tokens or 0) for e in events)

    # Client versus server at concurrency 1: TTFT is the server's prefill plus a few ms (HTTP, tokenising,
    # the first token's sampling and the way back); decode speed within 5 % of the server's own figure.
    overhead_ms = [e.ttft_ms - e.server_prefill_ms for e in events if e.ttft_ms and e.server_prefill_ms]
    client_tps = [e.decode_tps for e in events if e.decode_tps]
    server_tps = [e.completion_tokens * 1000 / e.server_decode_ms for e in events if e.server_decode_ms]
    print(
        f"\nTTFT - server prefill: median {statistics.median(overhead_ms):.2f} ms, max {max(overhead_ms):.2f} ms;"
        f" decode tok/s client median {statistics.median(client_tps):.1f}, server {statistics.median(server_tps):.1f}"
    )
    assert statistics.median(overhead_ms) < 10.0
    assert statistics.median(client_tps) == pytest.approx(statistics.median(server_tps), rel=0.05)


def test_a_repeated_prompt_is_served_from_the_cache_and_starts_sooner(llm_engine: LlmEndpoint) -> None:
    prompt = prose(300, uuid.uuid4().hex)
    events, _summary = probe(engine_workload(llm_engine, [prompt], requests=2, max_tokens=8))
    first, second = events
    assert first.status == second.status == "ok"
    assert second.cached_prompt_tokens > first.cached_prompt_tokens
    assert second.cached_prompt_tokens >= first.prompt_tokens // 2
    assert second.server_cached_tokens is not None and second.server_cached_tokens >= first.prompt_tokens // 2
    assert first.ttft_ms is not None and second.ttft_ms is not None
    assert second.ttft_ms < first.ttft_ms


def test_ttft_rises_with_concurrency(llm_engine: LlmEndpoint) -> None:
    run = uuid.uuid4().hex[:8]
    prompts = [prose(60, f"{run}-{n}") for n in range(16)]
    alone, _ = probe(engine_workload(llm_engine, prompts, concurrency=1, requests=8, max_tokens=24))
    crowded, _ = probe(engine_workload(llm_engine, prompts[8:], concurrency=4, requests=8, max_tokens=24))
    ttft_1 = statistics.median(e.ttft_ms for e in alone if e.ttft_ms is not None)
    ttft_4 = statistics.median(e.ttft_ms for e in crowded if e.ttft_ms is not None)
    print(f"\nmedian TTFT: concurrency 1 {ttft_1:.1f} ms, concurrency 4 {ttft_4:.1f} ms")
    assert ttft_4 > ttft_1


@pytest.mark.parametrize("concurrency", [2, 4])
def test_no_false_connection_errors_over_500_requests(llm_engine: LlmEndpoint, concurrency: int) -> None:
    # The engine closes kept-alive connections now and then; a request that lands on one is sent again on a
    # fresh connection and is not a provider error.
    prompts = [f"Say something about {word}." for word in _WORDS]
    events, summary = probe(engine_workload(llm_engine, prompts, concurrency=concurrency, requests=500, max_tokens=4))
    retried = summary.endpoints["llama"].stale_connection_retries
    print(f"\nconcurrency {concurrency}: 500 requests, {retried} sent again after a stale keep-alive connection")
    assert len(events) == 500
    assert [f"{e.error_kind}: {e.error_detail}" for e in events if e.status != "ok"] == []

"""Reasoning streams, tool calls and prompt caching: the probe against the simulator over real loopback HTTP.

Each figure is compared with the simulator's ground truth of the same request (its own monotonic clock,
kernel receive time of the request's first bytes, write time of every chunk). The simulator runs in its own
process: in a thread of the probe's process, a GIL switch between its stamp and its write (5 ms) would be
charged to the probe.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tokenpulse.producers.probe import run_workload_async
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess, SimulatorServer
from tokenpulse.producers.workload import Workload, parse_workload
from tokenpulse.schemas import RequestTiming, decode, encode

KEY = "sk-sim-reasoning-NEVER-PRINT"
PRICES = {
    "effective_from": "2020-01-01",
    "input_per_mtok": 0.6,
    "cached_input_per_mtok": 0.15,
    "output_per_mtok": 2.4,
    "reasoning_output_per_mtok": 3.0,
}
# The measured case: 60 reasoning tokens, the first 100 ms after the request then every 10 ms,
# then 20 answer tokens.
REASONING = {"ttft_ms": 100, "tokens_per_s": 100, "jitter": 0, "reasoning_tokens": 60, "output_tokens": 20}


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    profiles = {
        "think": LatencyProfile(**REASONING),  # type: ignore[arg-type]
        "think-groq": LatencyProfile(**REASONING, reasoning_field="reasoning"),  # type: ignore[arg-type]
        "think-bare": LatencyProfile(**REASONING, usage_details=False),  # type: ignore[arg-type]
        "tools": LatencyProfile(ttft_ms=20, tokens_per_s=200, jitter=0, output_tokens=12, tool_calls=2),
        "cache": LatencyProfile(ttft_ms=5, tokens_per_s=2000, jitter=0, output_tokens=4, prompt_cache=True),
        "limited": LatencyProfile(ttft_ms=5, tokens_per_s=2000, rate_429=1.0, retry_after_s=0.01),
        "strict": LatencyProfile(ttft_ms=5, tokens_per_s=2000, reject_max_tokens=True),
    }
    with SimulatorProcess(SimulatorConfig(endpoints=profiles, seed=11)) as process:
        yield process


def workload(sim: SimulatorProcess | SimulatorServer, endpoint: str, kind: str = "openai", **extra: object) -> Workload:
    base_url = sim.endpoint_url(endpoint) if kind == "openai" else f"{sim.base_url}/{endpoint}"
    document: dict[str, object] = {
        "name": "reasoning",
        "endpoints": [
            {
                "name": endpoint,
                "kind": kind,
                "base_url": base_url,
                "model": "sim-thinker",
                "api_key_env": "SIM_KEY",
                "prices": [PRICES],
            }
        ],
        "prompts": {"synthetic": {"count": 2, "input_tokens": 30, "output_tokens": 20}},
        "schedule": {"kind": "closed", "concurrency": 2},
        "requests": 4,
    }
    document.update(extra)
    return parse_workload(document)


def probe(w: Workload) -> list[RequestTiming]:
    sink = ListSink()
    asyncio.run(run_workload_async(w, sink, api_keys={e.name: SecretStr(KEY) for e in w.endpoints}))
    return sink.events


def true_tpot_ms(truth: dict[str, Any]) -> float:
    return float((truth["end_ns"] - truth["first_token_ns"]) / 1e6 / (truth["completion_tokens"] - 1))


@pytest.mark.parametrize("kind", ["openai", "cerebras"])
@pytest.mark.parametrize("endpoint", ["think", "think-groq"])
def test_reasoning_stream_times_match_ground_truth(sim: SimulatorProcess, endpoint: str, kind: str) -> None:
    events = probe(workload(sim, endpoint, kind=kind))
    truth = sim.ground_truth()
    assert len(events) == 4
    for event in events:
        assert decode(RequestTiming, encode(event)) == event
        true = truth[str(event.event_id)]
        assert event.status == "ok" and event.token_count_source == "usage"
        assert event.ttft_ms is not None and event.ttfa_ms is not None and event.reasoning_ms is not None
        assert abs(event.ttft_ms - true["ttft_ms"]) < 1.0
        assert abs(event.ttfa_ms - true["ttfa_ms"]) < 1.0
        # the first reasoning token, not the first answer (60 reasoning tokens come between them)
        assert event.ttft_ms < event.ttfa_ms and true["first_token_ns"] < true["first_answer_ns"]
        assert event.reasoning_ms == pytest.approx(event.ttfa_ms - event.ttft_ms)
        assert (event.reasoning_tokens, event.completion_tokens) == (60, 80) == (true["reasoning_tokens"], 80)
        assert event.tpot_ms is not None and event.decode_tps is not None
        assert event.tpot_ms == pytest.approx(true_tpot_ms(true), rel=0.02)
        assert event.decode_tps == pytest.approx(1000 / true_tpot_ms(true), rel=0.02)
        true_gaps_ms = [(b - a) / 1e6 for a, b in itertools.pairwise(true["token_ns"])]
        assert event.itl_p50_ms == pytest.approx(statistics.median(true_gaps_ms), abs=1.0)
        assert event.tool_calls == 0
        expected_cost = (30 * 0.6 + 20 * 2.4 + 60 * 3.0) / 1e6
        assert event.cost_usd == pytest.approx(expected_cost, rel=1e-12)


def test_reasoning_tokens_are_counted_when_usage_has_no_details(sim: SimulatorProcess) -> None:
    events = probe(workload(sim, "think-bare"))
    for event in events:
        assert event.token_count_source == "usage" and event.completion_tokens == 80
        assert event.reasoning_tokens == 60  # one reasoning chunk of one word each: counted
        assert event.cached_prompt_tokens == 0


@pytest.mark.parametrize("kind", ["openai", "cerebras"])
def test_a_tool_call_only_answer_is_ok_with_ttfa_at_the_first_fragment(sim: SimulatorProcess, kind: str) -> None:
    events = probe(workload(sim, "tools", kind=kind))
    truth = sim.ground_truth()
    for event in events:
        true = truth[str(event.event_id)]
        assert event.status == "ok", event.error_detail
        assert event.tool_calls == 2 == true["tool_calls"]
        assert event.ttfa_ms is not None
        assert abs(event.ttfa_ms - true["ttfa_ms"]) < 1.0
        assert event.ttft_ms == event.ttfa_ms and event.reasoning_ms is None
        assert event.completion_tokens == 12 and event.reasoning_tokens == 0


@pytest.mark.parametrize("kind", ["openai", "cerebras"])
def test_cached_prompt_tokens_and_the_discounted_cost_are_exact(sim: SimulatorProcess, kind: str) -> None:
    prompts = {"synthetic": {"count": 2, "input_tokens": 30, "output_tokens": 4, "seed": len(kind)}}  # fresh cache
    w = workload(sim, "cache", kind=kind, schedule={"kind": "closed", "concurrency": 1}, requests=5, prompts=prompts)
    events = probe(w)
    truth = sim.ground_truth()
    cached = [e.cached_prompt_tokens for e in sorted(events, key=lambda e: e.started_at)]
    assert cached == [0, 0, 30, 30, 30]  # two synthetic prompts; each is cached from its second send
    for event in events:
        true = truth[str(event.event_id)]
        assert event.cached_prompt_tokens == true["cached_prompt_tokens"]
        uncached = event.prompt_tokens - event.cached_prompt_tokens
        expected = (uncached * 0.6 + event.cached_prompt_tokens * 0.15 + 4 * 2.4) / 1e6
        assert event.cost_usd == pytest.approx(expected, rel=1e-12)
        assert event.price_cached_in_per_mtok == 0.15 and event.price_reasoning_out_per_mtok == 3.0


def test_a_prompt_cache_hit_comes_back_faster() -> None:
    profile = LatencyProfile(ttft_ms=5, tokens_per_s=2000, jitter=0, output_tokens=2, prompt_cache=True)
    with SimulatorServer({"c": profile.model_copy(update={"prefill_ms_per_token": 2.0})}) as server:
        w = workload(
            server, "c", schedule={"kind": "closed", "concurrency": 1}, requests=2, prompts={"inline": ["a " * 50]}
        )
        events = sorted(probe(w), key=lambda e: e.started_at)
        truth = server.ground_truth()
    first, second = (truth[str(e.event_id)] for e in events)
    assert (first.cached_prompt_tokens, second.cached_prompt_tokens) == (0, 50)
    assert first.ttft_ms is not None and second.ttft_ms is not None
    assert second.ttft_ms < first.ttft_ms - 50  # 50 tokens of 2 ms prefill were skipped
    assert [e.cached_prompt_tokens for e in events] == [0, 50]


@pytest.mark.parametrize("kind", ["openai", "cerebras"])
def test_a_429_before_any_output_costs_nothing(sim: SimulatorProcess, kind: str) -> None:
    events = probe(workload(sim, "limited", kind=kind, requests=2))
    assert [e.error_kind for e in events] == ["http_429", "http_429"]
    for event in events:
        assert (event.cost_usd, event.prompt_tokens, event.completion_tokens) == (0.0, 0, 0)
        assert event.token_count_source == "estimated" and event.ttft_ms is None and event.ttfa_ms is None


def test_a_server_that_rejects_max_tokens_answers_400_naming_it(sim: SimulatorProcess) -> None:
    events = probe(workload(sim, "strict", requests=1))
    assert [(e.error_kind, e.http_status) for e in events] == [("http_4xx", 400)]
    assert "max_tokens" in (events[0].error_detail or "")
    assert events[0].cost_usd == 0.0

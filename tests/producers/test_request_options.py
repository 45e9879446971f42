"""Request options per endpoint and per prompt, extra headers, and multi-turn prompts from YAML and JSONL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tokenpulse.producers.adapters.openai import OpenAIAdapter
from tokenpulse.producers.errors import ProbeFailure, WorkloadError
from tokenpulse.producers.probe import run_workload_async
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorServer
from tokenpulse.producers.stream import ChatRequest, StreamRecorder
from tokenpulse.producers.workload import Workload, load_prompts, load_workload, parse_workload
from tokenpulse.schemas import RequestTiming, encode
from tokenpulse.testing import FakeClock
from tokenpulse.testing.adapters import stream_to_end

HEADER_SECRET = "org-secret-NEVER-PRINT-77"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    profiles = {
        "strict": LatencyProfile(ttft_ms=2, tokens_per_s=5000, jitter=0, reject_max_tokens=True, output_tokens=3),
        "tools": LatencyProfile(ttft_ms=2, tokens_per_s=5000, jitter=0, output_tokens=4, tool_calls=1),
    }
    with SimulatorServer(SimulatorConfig(endpoints=profiles, seed=1)) as server:
        yield server


def workload(sim: SimulatorServer, endpoint: str, kind: str = "openai", **fields: object) -> Workload:
    base_url = sim.endpoint_url(endpoint) if kind == "openai" else f"{sim.base_url}/{endpoint}"
    prompts = fields.pop("prompts", {"inline": ["hello there"]})
    return parse_workload(
        {
            "name": "options",
            "requests": 2,
            "schedule": {"kind": "closed", "concurrency": 1},
            "prompts": prompts,
            "endpoints": [{"name": endpoint, "kind": kind, "base_url": base_url, "model": "m", **fields}],
        }
    )


def probe(w: Workload) -> list[RequestTiming]:
    sink = ListSink()
    asyncio.run(run_workload_async(w, sink, api_keys={}))
    return sink.events


@pytest.mark.parametrize("kind", ["openai", "cerebras"])
def test_max_completion_tokens_is_chosen_per_endpoint(sim: SimulatorServer, kind: str) -> None:
    events = probe(workload(sim, "strict", kind=kind, max_tokens_param="max_completion_tokens"))
    assert [e.status for e in events] == ["ok", "ok"]
    for truth in sim.ground_truth().values():
        assert truth.request_fields["max_completion_tokens"] == 256 and "max_tokens" not in truth.request_fields


@pytest.mark.parametrize("kind", ["openai", "cerebras"])
def test_options_reach_the_server_and_a_prompts_options_win(
    sim: SimulatorServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    options = {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "reasoning_effort": "low",
        "stop": ["</answer>"],
        "tools": TOOLS,
        "tool_choice": "required",
        "extra_body": {"top_k": 20, "chat_template_kwargs": {"enable_thinking": True}},
    }
    prompts = {
        "inline": [
            {"id": "hot", "text": "weather?", "options": {"temperature": 1.3, "extra_body": {"top_k": 5}}},
            {"id": "plain", "text": "weather again?"},
        ]
    }
    w = workload(sim, "tools", kind=kind, options=options, extra_headers={"X-Org": HEADER_SECRET}, prompts=prompts)
    events = probe(w)
    truth = sim.ground_truth()
    by_prompt = {e.prompt_id: truth[str(e.event_id)] for e in events}
    assert set(by_prompt) == {"hot", "plain"} and all(e.status == "ok" and e.tool_calls == 1 for e in events)
    plain = by_prompt["plain"].request_fields
    assert plain == {
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "reasoning_effort": "low",
        "stop": ["</answer>"],
        "tools": TOOLS,
        "tool_choice": "required",
        "top_k": 20,
        "chat_template_kwargs": {"enable_thinking": True},
    }
    hot = by_prompt["hot"].request_fields
    assert (hot["temperature"], hot["top_k"], hot["seed"]) == (1.3, 5, 7)
    assert all("x-org" in (name.lower() for name in t.headers) for t in by_prompt.values())
    blobs = [encode(e).decode() for e in events] + [repr(e) for e in events] + [repr(w), caplog.text]
    assert all(HEADER_SECRET not in blob for blob in blobs)


def test_an_extra_header_echoed_in_an_error_body_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": f"header {request.headers['X-Org']} is not allowed"})

    adapter = OpenAIAdapter(
        "http://sim.test/v1",
        SecretStr("sk-x"),
        transport=httpx.MockTransport(handler),
        extra_headers={"X-Org": HEADER_SECRET},
    )
    request = ChatRequest(model="m", messages=({"role": "user", "content": "hi"},), max_tokens=4, request_id="r")
    with pytest.raises(ProbeFailure) as info:
        stream_to_end(adapter, request, StreamRecorder(FakeClock().monotonic_ns))
    assert HEADER_SECRET not in str(info.value) and "***" in info.value.detail
    assert HEADER_SECRET not in repr(adapter)


def minimal(**fields: object) -> dict[str, object]:
    return {
        "name": "w",
        "requests": 1,
        "prompts": {"inline": ["hi"]},
        "endpoints": [{"name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m"}],
        **fields,
    }


def test_multi_turn_inline_prompts_keep_their_roles() -> None:
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    prompts = load_prompts(
        parse_workload(minimal(prompts={"inline": [{"id": "chat", "messages": conversation}]})).prompts
    )
    assert [(p.id, list(p.messages)) for p in prompts] == [("chat", conversation)]


def test_multi_turn_jsonl_prompts_with_options(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(
        '{"id": "t1", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],'
        ' "options": {"temperature": 0}}\n'
        '{"prompt": "plain", "max_tokens": 3}\n'
    )
    (tmp_path / "w.yaml").write_text(
        "name: w\nrequests: 1\nprompts: {file: p.jsonl}\n"
        "endpoints: [{name: e, kind: openai, base_url: 'http://h/v1', model: m}]\n"
    )
    first, second = load_prompts(load_workload(tmp_path / "w.yaml").prompts)
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert first.options is not None and first.options.temperature == 0
    assert (second.id, second.text, second.max_tokens) == ("line2", "plain", 3)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id": "a", "messages": [{"content": "no role"}]}', "messages.0.role"),
        ('{"id": "a", "messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
        ('{"id": "", "prompt": "x"}', "'id'"),
        ('{"id": "' + "x" * 201 + '", "prompt": "x"}', "'id'"),
        ('{"id": "a", "prompt": ""}', "'prompt'"),
        ('{"id": "a"}', "(top level)"),
        ('{"id": "a", "prompt": "x", "options": {"temperature": 9}}', "options.temperature"),
        ('{"id": "a", "prompt": "x", "colour": "red"}', "'colour'"),
        ('{"id": "a", "messages": [{"role": "tool", "content": "42"}]}', "messages.0"),
    ],
)
def test_a_bad_prompt_line_names_file_line_and_field(tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "ok", "prompt": "fine"}\n' + line + "\n")
    workload = parse_workload(minimal(prompts={"file": str(path)}))
    with pytest.raises(WorkloadError) as info:
        load_prompts(workload.prompts)
    message = str(info.value)
    assert str(path) in message and "line 2" in message and field in message


def test_duplicate_prompt_ids_are_refused() -> None:
    prompts = {"inline": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}
    with pytest.raises(WorkloadError, match="'a' is used twice"):
        load_prompts(parse_workload(minimal(prompts=prompts)).prompts)


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"max_tokens_param": "max_new_tokens"}, "max_tokens_param"),
        ({"options": {"reasoning_effort": "extreme"}}, "options.reasoning_effort"),
        ({"options": {"extra_body": {"stream": False}}}, "options.extra_body"),
        ({"options": {"tools": [{"type": "function"}]}}, "options.tools"),
        ({"extra_headers": {"Authorization": "Bearer x"}}, "extra_headers"),
    ],
)
def test_bad_request_options_name_the_field(endpoint: dict[str, object], field: str) -> None:
    document = minimal()
    document["endpoints"] = [{"name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m", **endpoint}]
    with pytest.raises(WorkloadError, match=field.replace(".", r"\.")):
        parse_workload(document)

"""The simulator over real loopback HTTP, and the probe against it (events collected in memory)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from rich.console import Console

from tokenpulse.producers.probe import run_workload_async
from tokenpulse.producers.report import summary_table
from tokenpulse.producers.simulator import LatencyProfile, ProfileChange, SimulatorConfig, SimulatorServer
from tokenpulse.producers.simulator.profiles import effective_profile
from tokenpulse.producers.workload import Workload, parse_workload
from tokenpulse.schemas import RequestTiming, decode, encode

KEY = "sk-sim-NEVER-PRINT-ME-42"


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    profiles = {
        "fast": LatencyProfile(ttft_ms=5, tokens_per_s=2000, jitter=0),
        "flaky": LatencyProfile(
            ttft_ms=2,
            tokens_per_s=2000,
            jitter=0,
            error_rate=0.2,
            rate_429=0.1,
            retry_after_s=0.05,
            cut_rate=0.15,
            invalid_json_rate=0.15,
        ),
        "stuck": LatencyProfile(ttft_ms=3000, tokens_per_s=1000),
    }
    with SimulatorServer(SimulatorConfig(endpoints=profiles, seed=3)) as server:
        yield server


def workload(sim: SimulatorServer, endpoint: str, kind: str = "openai", **extra: object) -> Workload:
    base_url = sim.endpoint_url(endpoint) if kind == "openai" else f"{sim.base_url}/{endpoint}"
    document: dict[str, object] = {
        "name": "unit",
        "endpoints": [
            {
                "name": endpoint,
                "kind": kind,
                "base_url": base_url,
                "model": "sim-model",
                "api_key_env": "SIM_KEY",
                "prices": [{"effective_from": "2020-01-01", "input_per_mtok": 1, "output_per_mtok": 3}],
            }
        ],
        "prompts": {"synthetic": {"count": 3, "input_tokens": 20, "output_tokens": 8}},
        "schedule": {"kind": "closed", "concurrency": 4},
        "requests": 40,
    }
    document.update(extra)
    return parse_workload(document)


def probe(w: Workload) -> ListSink:
    sink = ListSink()
    asyncio.run(run_workload_async(w, sink, api_keys={e.name: _key() for e in w.endpoints}))
    return sink


def _key() -> SecretStr:
    return SecretStr(KEY)


def test_ok_events_match_ground_truth_and_are_schema_valid(sim: SimulatorServer) -> None:
    sink = probe(workload(sim, "fast", warmup_requests=2))
    assert len(sink.events) == 40
    truth = sim.ground_truth()
    assert len(truth) == 42  # warm-up requests were sent but not published
    for event in sink.events:
        assert decode(RequestTiming, encode(event)) == event
        assert event.status == "ok" and event.token_count_source == "usage"
        assert event.completion_tokens == 8 and event.prompt_tokens == 20
        assert event.cost_usd == pytest.approx((20 * 1 + 8 * 3) / 1e6)
        true = truth[str(event.event_id)]
        assert true.completion_tokens == 8
        assert event.ttft_ms is not None and true.ttft_ms is not None
        # the probe cannot see a token before it was sent (20 us: two wall-to-monotonic conversions)
        assert event.ttft_ms > true.ttft_ms - 0.020
        assert event.endpoint.endswith("/fast/v1/chat/completions")


def test_every_fault_becomes_an_error_event_and_the_probe_carries_on(sim: SimulatorServer) -> None:
    sink = probe(workload(sim, "flaky", requests=120))
    assert len(sink.events) == 120
    kinds = Counter(e.error_kind for e in sink.events)
    truth = sim.ground_truth()
    expected = Counter(
        {
            "http_429": "http_429",
            "http_5xx": "http_5xx",
            "cut": "stream_broken",
            "invalid_json": "invalid_response",
            "ok": None,
        }[truth[str(e.event_id)].outcome]
        for e in sink.events
    )
    assert kinds == expected
    assert {"http_429", "http_5xx", "stream_broken", "invalid_response", None} <= set(kinds)
    for event in sink.events:
        assert (event.status == "ok") == (event.error_kind is None)
        if event.error_kind == "http_429":
            assert event.http_status == 429


def test_first_token_timeout(sim: SimulatorServer) -> None:
    w = workload(sim, "stuck", requests=2, timeouts={"connect_s": 2, "first_token_s": 0.2, "total_s": 10})
    sink = probe(w)
    assert [(e.status, e.error_kind, e.ttft_ms) for e in sink.events] == [("error", "timeout", None)] * 2
    assert all("first token" in (e.error_detail or "") for e in sink.events)


def test_connect_error_event() -> None:
    w = parse_workload(
        {
            "name": "down",
            "requests": 2,
            "prompts": {"inline": ["hi"]},
            "endpoints": [{"name": "gone", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
        }
    )
    sink = ListSink()
    asyncio.run(run_workload_async(w, sink, api_keys={}))
    assert [e.error_kind for e in sink.events] == ["connect", "connect"]


def test_retry_after_holds_the_next_request_back(sim: SimulatorServer) -> None:
    sim.set_profile("fast", LatencyProfile(ttft_ms=1, tokens_per_s=5000, rate_429=1.0, retry_after_s=0.3))
    sink = probe(workload(sim, "fast", requests=3, schedule={"kind": "closed", "concurrency": 1}))
    starts = sorted(e.started_at for e in sink.events)
    assert [e.error_kind for e in sink.events] == ["http_429"] * 3
    # Ordering, not speed: each send happens after the previous response's Retry-After has run out.
    assert all(b - a >= 300_000_000 for a, b in itertools.pairwise(starts))


def test_cerebras_sdk_adapter_against_the_simulator(sim: SimulatorServer) -> None:
    sink = probe(workload(sim, "fast", kind="cerebras", requests=6))
    assert len(sink.events) == 6
    truth = sim.ground_truth()
    for event in sink.events:
        assert event.status == "ok" and event.token_count_source == "usage" and event.completion_tokens == 8
        assert str(event.event_id) in truth


def test_cerebras_sdk_adapter_classifies_errors(sim: SimulatorServer) -> None:
    sink = probe(workload(sim, "flaky", kind="cerebras", requests=40))
    kinds = {e.error_kind for e in sink.events}
    assert {"http_5xx", "http_429"} <= kinds


def test_no_key_in_events_logs_or_reprs(sim: SimulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = probe(workload(sim, "flaky", requests=30))
    blobs = [encode(e).decode() for e in sink.events] + [repr(e) for e in sink.events] + [caplog.text]
    assert all(KEY not in blob for blob in blobs)


def test_open_loop_records_schedule_lag(sim: SimulatorServer) -> None:
    sink = probe(workload(sim, "fast", requests=20, schedule={"kind": "open", "rate_per_s": 100, "seed": 1}))
    assert all(e.schedule_lag_ms is not None and e.schedule_lag_ms >= 0 for e in sink.events)


def test_scripted_change_scales_ttft() -> None:
    base = LatencyProfile(ttft_ms=100, ttft_p95_ms=200, tokens_per_s=50)
    changes = [
        ProfileChange(after_s=60, endpoint="a", ttft_scale=2.0),
        ProfileChange(after_s=90, set={"error_rate": 0.5}),
    ]
    assert effective_profile("a", base, changes, 59.9) == base
    doubled = effective_profile("a", base, changes, 60.0)
    assert (doubled.ttft_ms, doubled.ttft_p95_ms) == (200, 400)
    assert effective_profile("b", base, changes, 60.0) == base
    assert effective_profile("a", base, changes, 95).error_rate == 0.5


def test_simulator_control_api_over_http(sim: SimulatorServer) -> None:
    with httpx.Client(base_url=sim.base_url) as client:
        assert client.get("/_sim/profiles").json()["endpoints"]["fast"]["ttft_ms"] == 5
        assert client.post("/_sim/changes", json={"after_s": 0, "endpoint": "fast", "ttft_scale": 3}).status_code == 200
        assert client.get("/_sim/profiles").json()["endpoints"]["fast"]["ttft_ms"] == 15
        assert client.put("/_sim/profiles/fast", json={"ttft_ms": -1}).status_code == 400
        body = {"model": "m", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 2, "stream": True}
        with client.stream("POST", "/nope/v1/chat/completions", json=body) as response:
            assert response.status_code == 404
        client.post("/fast/v1/chat/completions", json=body, headers={"X-Tokenpulse-Request-Id": "abc"})
        rows = client.get("/_sim/ground-truth", params={"request_id": "abc"}).json()
        assert len(rows) == 1 and rows[0]["completion_tokens"] == 2 and rows[0]["ttft_ms"] >= 15
    sim.change_in(0, endpoint="fast", set={"error_rate": 1.0})
    assert sim.state.profile("fast").error_rate == 1.0


@pytest.mark.usefixtures("kernel_stamping")
@pytest.mark.parametrize("kind", ["openai", "cerebras"])
def test_every_socket_read_of_a_probe_run_is_timed_by_the_kernel_and_the_summary_says_so(
    sim: SimulatorServer, kind: str
) -> None:
    w = workload(sim, "fast", kind=kind, requests=10)
    summary = asyncio.run(run_workload_async(w, ListSink(), api_keys={"fast": _key()}))
    reads = summary.endpoints["fast"].socket_reads
    assert reads is not None and reads.total >= 10  # at least one read per streamed response
    assert reads.kernel_stamped == reads.total
    console = Console(width=200, record=True)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "kernel stamps" in text and "100.0%" in text


def test_a_wall_clock_that_jumps_back_mid_run_does_not_move_started_at(sim: SimulatorServer) -> None:
    # started_at is one wall-clock reading taken at the start (the anchor) plus monotonic time since then.
    import time

    from tokenpulse.producers.probe import Clocks

    readings = iter([time.time_ns()])

    def wall_ns() -> int:
        return next(readings, time.time_ns() - 3600 * 1_000_000_000)  # NTP stepped the clock back an hour

    sink = ListSink()
    clocks = Clocks(time_ns=wall_ns)
    asyncio.run(run_workload_async(workload(sim, "fast"), sink, api_keys={"fast": SecretStr(KEY)}, clocks=clocks))
    started = sorted(e.started_at for e in sink.events)
    assert len(started) == 40 and abs(started[0] - time.time_ns()) < 60 * 1_000_000_000
    assert started[-1] - started[0] < 30 * 1_000_000_000  # no hour-long jump inside the run

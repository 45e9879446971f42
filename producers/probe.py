"""Runs a workload: sends every request, times it, and turns it into one ``RequestTiming`` event.

``run_workload(workload, settings)`` is the entry point for the CLI, the demo and tests; it publishes to
Kafka through ``KafkaPublisher`` (spooling when the broker is away) and returns a ``ProbeSummary``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import os
import random
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from tokenpulse.config import Settings
from tokenpulse.producers.adapters.base import ProviderAdapter
from tokenpulse.producers.adapters.cerebras import CerebrasAdapter
from tokenpulse.producers.adapters.openai import OpenAIAdapter
from tokenpulse.producers.adapters.wire import SocketReads
from tokenpulse.producers.errors import ProbeFailure, WorkloadError
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig, PublishStats
from tokenpulse.producers.scheduler import RetryAfterGate, Slot, StopCondition, run_closed_loop, run_open_loop
from tokenpulse.producers.spool import SpoolError
from tokenpulse.producers.stream import ChatRequest, StreamRecorder
from tokenpulse.producers.timing import Prices, compute_metrics_columns, percentile
from tokenpulse.producers.workload import ClosedSchedule, Endpoint, Prompt, Workload, load_prompts
from tokenpulse.schemas import RequestTiming

log = logging.getLogger(__name__)


EventLoop = Literal["uvloop", "asyncio"]
T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T], loop: EventLoop = "uvloop") -> T:
    """Run ``main`` to completion on a new event loop: uvloop (when installed) or asyncio's default loop."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            log.info("uvloop is not installed; using asyncio's default event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


class EventSink(Protocol):
    def publish(self, event: RequestTiming) -> None: ...


@dataclass(slots=True)
class EndpointSummary:
    """Running figures of one endpoint (measured requests only, warm-up excluded)."""

    name: str
    requests: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    ttft_ms: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    schedule_lag_ms: list[float] = field(default_factory=list)
    cost_usd: float = 0.0
    completion_tokens: int = 0
    socket_reads: SocketReads | None = None
    """The adapter's socket reads (``None`` for an adapter without the probe's own connections)."""

    def add(self, event: RequestTiming) -> None:
        self.requests += 1
        if event.status == "error":
            self.errors += 1
            self.error_kinds[event.error_kind or "unknown"] += 1
        if event.ttft_ms is not None and event.status == "ok":
            self.ttft_ms.append(event.ttft_ms)
        if event.decode_tps is not None and event.status == "ok":
            self.decode_tps.append(event.decode_tps)
        if event.schedule_lag_ms is not None:
            self.schedule_lag_ms.append(event.schedule_lag_ms)
        self.cost_usd += event.cost_usd
        self.completion_tokens += event.completion_tokens

    def quantile(self, metric: str, q: float) -> float | None:
        values: list[float] = getattr(self, metric)
        return percentile(sorted(values), q) if values else None


@dataclass(slots=True)
class ProbeSummary:
    workload: str
    probe_id: str
    endpoints: dict[str, EndpointSummary]
    warmup_requests: int = 0
    publish: PublishStats | None = None
    elapsed_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.endpoints.values())

    @property
    def errors(self) -> int:
        return sum(e.errors for e in self.endpoints.values())


@dataclass(frozen=True, slots=True)
class Clocks:
    """Monotonic and wall clocks (ns); wall time of an event is derived from one anchor pair."""

    monotonic_ns: Callable[[], int] = time.monotonic_ns
    time_ns: Callable[[], int] = time.time_ns


def resolve_api_keys(workload: Workload, environ: Mapping[str, str]) -> dict[str, SecretStr | None]:
    """Each endpoint's key from the environment variable it names; a missing variable is a WorkloadError."""
    keys: dict[str, SecretStr | None] = {}
    for endpoint in workload.endpoints:
        if endpoint.api_key_env is None:
            keys[endpoint.name] = None
            continue
        value = environ.get(endpoint.api_key_env)
        if not value:
            raise WorkloadError(
                f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} is not set; "
                f"export {endpoint.api_key_env}=<your key> or remove api_key_env for keyless endpoints"
            )
        keys[endpoint.name] = SecretStr(value)
    return keys


def make_adapter(endpoint: Endpoint, api_key: SecretStr | None, workload: Workload) -> ProviderAdapter:
    t = workload.timeouts
    timeout = httpx.Timeout(connect=t.connect_s, read=t.total_s, write=t.connect_s, pool=None)
    if endpoint.kind == "cerebras":
        return CerebrasAdapter(endpoint.base_url, api_key, timeout=timeout)
    return OpenAIAdapter(endpoint.base_url, api_key, timeout=timeout)


def endpoint_url(endpoint: Endpoint) -> str:
    """scheme://host[:port]/path of the chat completions URL, never credentials or a query."""
    path = "/v1/chat/completions" if endpoint.kind == "cerebras" else "/chat/completions"
    parts = urlsplit(endpoint.base_url + path)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class EndpointProbe:
    """Probes one endpoint: sends requests, times them and emits events (measured ones to ``sink``)."""

    def __init__(
        self,
        workload: Workload,
        endpoint: Endpoint,
        adapter: ProviderAdapter,
        prompts: list[Prompt],
        sink: EventSink,
        *,
        probe_id: str,
        clocks: Clocks,
        anchor: tuple[int, int],
        summary: EndpointSummary,
        on_event: Callable[[RequestTiming], None] | None = None,
    ) -> None:
        self.workload = workload
        self.endpoint = endpoint
        self.adapter = adapter
        self.prompts = prompts
        self.sink = sink
        self.probe_id = probe_id
        self.clocks = clocks
        self.anchor_wall_ns, self.anchor_mono_ns = anchor
        self.summary = summary
        self.on_event = on_event
        self.prices: Prices = endpoint.prices_on(dt.datetime.fromtimestamp(anchor[0] / 1e9, dt.UTC).date())
        self.url = endpoint_url(endpoint)
        self.gate = RetryAfterGate(clocks.monotonic_ns, workload.max_retry_after_s)
        self.warmups_done = 0
        self.stop: StopCondition | None = None
        self.failure: SpoolError | None = None

    async def run(self, rng: random.Random) -> None:
        total = self.workload.requests + self.workload.warmup_requests if self.workload.requests else None
        stop = self.stop = StopCondition(total, self.workload.duration_s, self.clocks.monotonic_ns)
        schedule = self.workload.schedule
        if isinstance(schedule, ClosedSchedule):
            await run_closed_loop(schedule.concurrency, stop, self.gate, self.execute)
        else:
            await run_open_loop(
                schedule.rate_per_s, stop, self.gate, self.execute, rng=rng, clock=self.clocks.monotonic_ns
            )
        if self.failure is not None:
            raise self.failure

    async def execute(self, slot: Slot) -> None:
        prompt = self.prompts[slot.index % len(self.prompts)]
        event = await self.probe_once(prompt, slot.planned_ns)
        if slot.index < self.workload.warmup_requests:
            self.warmups_done += 1
            return
        self.summary.add(event)
        try:
            self.sink.publish(event)
        except SpoolError as exc:
            # The spool cannot keep what later requests would measure: stop probing; ``run`` raises it.
            self.failure = self.failure or exc
            if self.stop is not None:
                self.stop.halt()
            return
        if self.on_event is not None:
            self.on_event(event)

    async def probe_once(self, prompt: Prompt, planned_ns: int | None = None) -> RequestTiming:
        """Send one request and return its event; never raises for a failed request."""
        event_id = uuid.uuid4()
        request = ChatRequest(
            model=self.endpoint.model,
            messages=prompt.messages,
            max_tokens=prompt.max_tokens or self.workload.max_tokens,
            request_id=str(event_id),
            prompt_id=prompt.id,
            send_at_ns=planned_ns,
        )
        recorder = StreamRecorder(self.clocks.monotonic_ns)
        failure: ProbeFailure | None = None
        timeouts = self.workload.timeouts
        loop = asyncio.get_running_loop()
        # An open-loop request starts a little before its planned send time; its timeouts count from then.
        held_s = max(0, planned_ns - self.clocks.monotonic_ns()) / 1e9 if planned_ns is not None else 0.0
        start = loop.time() + held_s
        total_deadline = start + timeouts.total_s
        try:
            async with asyncio.timeout_at(min(start + timeouts.first_token_s, total_deadline)) as deadline:
                recorder.on_first_content = lambda: deadline.reschedule(total_deadline)
                await self.adapter.stream(request, recorder)
        except ProbeFailure as exc:
            failure = exc
        except TimeoutError:
            which = (
                f"total {timeouts.total_s:g}s" if recorder.saw_content else f"first token {timeouts.first_token_s:g}s"
            )
            failure = ProbeFailure("timeout", f"{which} timeout")
        if failure is not None and failure.kind == "http_429" and failure.retry_after_s is not None:
            self.gate.block(failure.retry_after_s)
        return self.build_event(event_id, prompt, recorder, failure, planned_ns)

    def build_event(
        self,
        event_id: uuid.UUID,
        prompt: Prompt,
        recorder: StreamRecorder,
        failure: ProbeFailure | None,
        planned_ns: int | None,
    ) -> RequestTiming:
        now = self.clocks.monotonic_ns()
        sent_ns = recorder.sent_ns if recorder.sent_ns is not None else now
        end_ns = recorder.finished_ns if recorder.finished_ns is not None and failure is None else now
        metrics = compute_metrics_columns(
            sent_ns,
            end_ns,
            recorder.times_ns,
            recorder.deltas,
            recorder.usage,
            prompt_text=prompt.text,
            prices=self.prices,
        )
        return RequestTiming(
            event_id=event_id,
            probe_id=self.probe_id,
            started_at=self.anchor_wall_ns + (sent_ns - self.anchor_mono_ns),
            provider=self.endpoint.provider_label,
            model=self.endpoint.model,
            endpoint=self.url,
            region=self.endpoint.region,
            workload=self.workload.name,
            prompt_id=prompt.id,
            status="ok" if failure is None else "error",
            error_kind=failure.kind if failure is not None else None,
            error_detail=failure.detail[:500] if failure is not None else None,
            http_status=failure.http_status if failure is not None and failure.http_status else recorder.http_status,
            ttft_ms=metrics.ttft_ms,
            e2e_ms=metrics.e2e_ms,
            tpot_ms=metrics.tpot_ms,
            itl_p50_ms=metrics.itl_p50_ms,
            itl_p95_ms=metrics.itl_p95_ms,
            itl_max_ms=metrics.itl_max_ms,
            decode_tps=metrics.decode_tps,
            prompt_tokens=metrics.prompt_tokens,
            completion_tokens=metrics.completion_tokens,
            token_count_source=metrics.token_count_source,
            price_in_per_mtok=self.prices.input_per_mtok,
            price_out_per_mtok=self.prices.output_per_mtok,
            cost_usd=metrics.cost_usd,
            schedule_lag_ms=(sent_ns - planned_ns) / 1e6 if planned_ns is not None else None,
            tags=dict(self.workload.tags),
        )


def default_probe_id(workload: Workload) -> str:
    return workload.probe_id or f"{socket.gethostname()}-{workload.name}"[:200]


async def run_workload_async(
    workload: Workload,
    sink: EventSink,
    *,
    api_keys: Mapping[str, SecretStr | None],
    clocks: Clocks | None = None,
    on_event: Callable[[RequestTiming], None] | None = None,
    adapters: Mapping[str, ProviderAdapter] | None = None,
    seed: int | None = None,
    summary: ProbeSummary | None = None,
    freeze_gc: bool = True,
) -> ProbeSummary:
    """Probe every endpoint of ``workload`` concurrently; measured events go to ``sink``.

    ``freeze_gc`` moves the objects alive at the start into the collector's permanent generation for the
    run (``gc.freeze``), so a full collection does not pause the timestamps of every stream.
    """
    clocks = clocks or Clocks()
    probe_id = default_probe_id(workload)
    summary = summary or new_summary(workload)
    prompts = load_prompts(workload.prompts)
    anchor = (clocks.time_ns(), clocks.monotonic_ns())
    own = {e.name: make_adapter(e, api_keys.get(e.name), workload) for e in workload.endpoints if not adapters}
    chosen = dict(adapters) if adapters else own
    for name, adapter in chosen.items():
        reads = getattr(adapter, "socket_reads", None)
        summary.endpoints[name].socket_reads = reads if isinstance(reads, SocketReads) else None
    probes = [
        EndpointProbe(
            workload,
            endpoint,
            chosen[endpoint.name],
            prompts,
            sink,
            probe_id=probe_id,
            clocks=clocks,
            anchor=anchor,
            summary=summary.endpoints[endpoint.name],
            on_event=on_event,
        )
        for endpoint in workload.endpoints
    ]
    base_seed = seed if seed is not None else (getattr(workload.schedule, "seed", None) or random.randrange(2**31))
    started = clocks.monotonic_ns()
    if freeze_gc:
        # A full (gen 2) collection walks every object of every imported library: 100 ms pauses were seen on
        # this 2-core machine, stalling every stream's timestamps. Objects alive now are moved out of the
        # collector's way for the run and handed back afterwards. No collection first: it cost 30-50 ms of
        # CPU per run, and the little garbage frozen with them is collected after ``unfreeze``.
        gc.freeze()
    try:
        async with asyncio.TaskGroup() as group:
            for number, probe in enumerate(probes):
                group.create_task(probe.run(random.Random(base_seed + number)))
    finally:
        if freeze_gc:
            gc.unfreeze()
        for adapter in own.values():
            await adapter.aclose()
    summary.warmup_requests = sum(p.warmups_done for p in probes)
    summary.elapsed_s = (clocks.monotonic_ns() - started) / 1e9
    return summary


def first_leaf(group: BaseExceptionGroup[SpoolError]) -> SpoolError:
    """The first error of a (nested) group: what the CLI shows when the spool stopped the probe."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def new_summary(workload: Workload) -> ProbeSummary:
    return ProbeSummary(
        workload=workload.name,
        probe_id=default_probe_id(workload),
        endpoints={e.name: EndpointSummary(e.name) for e in workload.endpoints},
    )


def publisher_for(settings: Settings, workload: Workload, **overrides: object) -> KafkaPublisher:
    """A publisher to ``settings.topics.request_timings`` with a spool under ``settings.data_dir``."""
    spool = Path(settings.data_dir) / "spool" / f"{default_probe_id(workload)}.sqlite"
    config = PublisherConfig(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topics.request_timings,
        spool_path=spool,
        spool_max_bytes=settings.spool_max_bytes,
        spool_fsync=settings.spool_fsync,
    )
    if overrides:
        config = PublisherConfig(**{**{k: getattr(config, k) for k in PublisherConfig.__slots__}, **overrides})  # type: ignore[arg-type]
    return KafkaPublisher(config)


def run_workload(
    workload: Workload,
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    on_event: Callable[[RequestTiming], None] | None = None,
    publisher: KafkaPublisher | None = None,
    drain_timeout_s: float = 30.0,
    summary: ProbeSummary | None = None,
    switch_interval_s: float | None = None,
    event_loop: EventLoop = "uvloop",
) -> ProbeSummary:
    """Run ``workload`` to completion, publish its events to Kafka and return the summary.

    Events the broker did not take within ``drain_timeout_s`` stay in the spool and are replayed by the
    next run with the same probe id; ``summary.publish.pending_in_spool`` says how many.
    """
    api_keys = resolve_api_keys(workload, os.environ if environ is None else environ)
    publisher = publisher or publisher_for(settings, workload)
    # The Kafka client runs threads in this process. A short GIL switch interval (0.2 ms) was measured with
    # Kafka on (bench/probe_*.py --kafka --switch-interval): TTFT error p99 unchanged (2.33 vs 2.29 ms),
    # schedule lag p99 worse (4.58 vs 1.83 ms), so CPython's default is kept unless one is given.
    previous_interval = sys.getswitchinterval()
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)
    try:
        try:
            result = run_async(
                run_workload_async(workload, publisher, api_keys=api_keys, on_event=on_event, summary=summary),
                event_loop,
            )
        except* SpoolError as group:
            raise first_leaf(group) from None
        publisher.drain(drain_timeout_s)
    finally:
        stats = publisher.close()
        sys.setswitchinterval(previous_interval)
    result.publish = stats
    return result

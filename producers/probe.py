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
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from ddsketch import DDSketch
from pydantic import SecretStr

from tokenpulse.config import Settings
from tokenpulse.producers.adapters.base import ProviderAdapter
from tokenpulse.producers.adapters.cerebras import CerebrasAdapter
from tokenpulse.producers.adapters.openai import OpenAIAdapter
from tokenpulse.producers.adapters.wire import SocketReads
from tokenpulse.producers.errors import ProbeFailure, WorkloadError
from tokenpulse.producers.health import EndpointHealth, HealthPolicy
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig, PublishStats
from tokenpulse.producers.scheduler import Slot, StopCondition, run_closed_loop, run_open_loop, run_periodic
from tokenpulse.producers.spool import SpoolError
from tokenpulse.producers.stream import ChatRequest, StreamRecorder
from tokenpulse.producers.timing import Prices, compute_metrics_columns
from tokenpulse.producers.workload import (
    ClosedSchedule,
    Endpoint,
    OpenSchedule,
    Prompt,
    Workload,
    header_values,
    new_nonce,
    workload_prompts,
)
from tokenpulse.retry import Backoff
from tokenpulse.schemas import RequestTiming

log = logging.getLogger(__name__)
SKETCH_RELATIVE_ACCURACY = 0.01


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


@dataclass(frozen=True, slots=True)
class EndpointFigures:
    """A copy of one endpoint's running figures, taken on the event loop for the live view and /metrics."""

    requests: int = 0
    errors: int = 0
    error_kinds: tuple[tuple[str, int], ...] = ()
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttfa_p95_ms: float | None = None
    decode_tps_p50: float | None = None
    schedule_lag_p99_ms: float | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    skipped: int = 0
    up: bool = True
    last_success_s: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost_per_1k_tokens(self) -> float | None:
        return 1000 * self.cost_usd / self.tokens if self.tokens else None


def _sketch() -> DDSketch:
    return DDSketch(relative_accuracy=SKETCH_RELATIVE_ACCURACY)


def _quantile(sketch: DDSketch, q: float) -> float | None:
    return sketch.get_quantile_value(q) if sketch.count else None


@dataclass(slots=True)
class EndpointSummary:
    """Running figures of one endpoint (measured requests only, warm-up excluded).

    Quantiles come from DDSketches (1% relative error, a few hundred bins whatever the run's length) and
    the rest are counters, so a monitor that runs for months keeps the same memory. The live view and the
    metrics server read ``figures``, a copy that ``refresh()`` takes on the event loop, never the sketches.
    """

    name: str
    provider: str | None = None
    requests: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    ttft_ms: DDSketch = field(default_factory=_sketch)
    ttfa_ms: DDSketch = field(default_factory=_sketch)
    decode_tps: DDSketch = field(default_factory=_sketch)
    schedule_lag_ms: DDSketch = field(default_factory=_sketch)
    cost_usd: float = 0.0
    completion_tokens: int = 0
    stale_connection_retries: int = 0
    """Requests sent again on a fresh connection after a reused keep-alive one turned out closed."""
    prompt_tokens: int = 0
    socket_reads: SocketReads | None = None
    """The adapter's socket reads (``None`` for an adapter without the probe's own connections)."""
    health: EndpointHealth | None = None
    figures: EndpointFigures = field(default_factory=EndpointFigures)

    def add(self, event: RequestTiming) -> None:
        self.requests += 1
        if event.status == "error":
            self.errors += 1
            self.error_kinds[event.error_kind or "unknown"] += 1
        if event.ttft_ms is not None and event.status == "ok":
            self.ttft_ms.add(event.ttft_ms)
        ttfa_ms = getattr(event, "ttfa_ms", None)  # the contract's time to first answer token, when recorded
        if isinstance(ttfa_ms, float) and event.status == "ok":
            self.ttfa_ms.add(ttfa_ms)
        if event.decode_tps is not None and event.status == "ok":
            self.decode_tps.add(event.decode_tps)
        if event.schedule_lag_ms is not None:
            self.schedule_lag_ms.add(event.schedule_lag_ms)
        self.cost_usd += event.cost_usd
        self.completion_tokens += event.completion_tokens
        self.stale_connection_retries += event.stale_connection_retry
        self.prompt_tokens += event.prompt_tokens

    def quantile(self, metric: str, q: float) -> float | None:
        """The ``q``-th percentile (0-100) of ``metric`` (``ttft_ms``, ``ttfa_ms``, ``decode_tps``,
        ``schedule_lag_ms``); ``None`` before the first value. Call on the event loop."""
        sketch: DDSketch = getattr(self, metric)
        return _quantile(sketch, q / 100)

    def refresh(self) -> EndpointFigures:
        """Take a new ``figures`` copy (on the event loop, where the sketches change)."""
        health = self.health
        self.figures = EndpointFigures(
            requests=self.requests,
            errors=self.errors,
            error_kinds=tuple(sorted(self.error_kinds.items())),
            ttft_p50_ms=_quantile(self.ttft_ms, 0.50),
            ttft_p95_ms=_quantile(self.ttft_ms, 0.95),
            ttfa_p95_ms=_quantile(self.ttfa_ms, 0.95),
            decode_tps_p50=_quantile(self.decode_tps, 0.50),
            schedule_lag_p99_ms=_quantile(self.schedule_lag_ms, 0.99),
            cost_usd=self.cost_usd,
            tokens=self.prompt_tokens + self.completion_tokens,
            skipped=health.skipped if health is not None else 0,
            up=health.up if health is not None else True,
            last_success_s=health.last_success_s if health is not None else None,
        )
        return self.figures


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

    def refresh(self) -> None:
        """Refresh every endpoint's ``figures`` (call on the event loop)."""
        for endpoint in list(self.endpoints.values()):
            endpoint.refresh()


async def refresh_every(summaries: Callable[[], Iterable[ProbeSummary]], interval_s: float = 0.25) -> None:
    """Refresh the figures of ``summaries()`` every ``interval_s`` until cancelled: a few sketch lookups on
    the loop, so the live view's thread renders copies and never reads (or sorts) what the loop changes."""
    while True:
        for summary in summaries():
            summary.refresh()
        await asyncio.sleep(interval_s)


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
    headers = header_values(endpoint)
    if endpoint.kind == "cerebras":
        return CerebrasAdapter(endpoint.base_url, api_key, timeout=timeout, extra_headers=headers)
    return OpenAIAdapter(endpoint.base_url, api_key, timeout=timeout, extra_headers=headers)


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
        self.health = EndpointHealth(health_policy(workload), clocks.monotonic_ns, lambda: clocks.time_ns() / 1e9)
        summary.health = self.health
        total = workload.requests + workload.warmup_requests if workload.requests else None
        self.stop = StopCondition(total, workload.duration_s, clocks.monotonic_ns)
        self.warmups_done = 0
        self.options = {p.id: (p, endpoint.options.merged(p.options).body_fields()) for p in prompts}
        self._nonce_rng = random.SystemRandom()
        self.failure: SpoolError | None = None

    def halt(self) -> None:
        """Start no new request; ``run`` returns once those in flight have finished."""
        self.stop.halt()

    async def run(self, rng: random.Random) -> None:
        schedule, stop, clock = self.workload.schedule, self.stop, self.clocks.monotonic_ns
        if isinstance(schedule, ClosedSchedule):
            await run_closed_loop(schedule.concurrency, stop, self.health, self.execute, clock=clock)
        elif isinstance(schedule, OpenSchedule):
            await run_open_loop(schedule.rate_per_s, stop, self.health, self.execute, rng=rng, clock=clock)
        else:
            await run_periodic(
                schedule.every_ns,
                schedule.requests,
                schedule.concurrency,
                schedule.jitter_ns,
                stop,
                self.health,
                self.execute,
                rng=rng,
                clock=clock,
            )
        if self.failure is not None:
            raise self.failure

    async def execute(self, slot: Slot) -> None:
        prompt = self.prompts[slot.index % len(self.prompts)]
        nonce = None
        if prompt.unique:
            nonce = new_nonce(self._nonce_rng)
            prompt = prompt.with_nonce(nonce)
        event = await self.probe_once(prompt, slot.planned_ns, nonce=nonce)
        if slot.index < self.workload.warmup_requests:
            self.warmups_done += 1
            return
        self.summary.add(event)
        try:
            self.sink.publish(event)
        except SpoolError as exc:
            # The spool cannot keep what later requests would measure: stop probing; ``run`` raises it.
            self.failure = self.failure or exc
            self.stop.halt()
            return
        if self.on_event is not None:
            self.on_event(event)

    def request_options(self, prompt: Prompt) -> dict[str, Any]:
        """The body fields of ``prompt`` on this endpoint (merged once per prompt of the workload)."""
        known = self.options.get(prompt.id)
        if known is not None and known[0] is prompt:
            return known[1]
        return self.endpoint.options.merged(prompt.options).body_fields()

    async def probe_once(
        self, prompt: Prompt, planned_ns: int | None = None, *, nonce: str | None = None
    ) -> RequestTiming:
        """Send one request and return its event; never raises for a failed request."""
        event_id = uuid.uuid4()
        request = ChatRequest(
            model=self.endpoint.model,
            messages=prompt.messages,
            max_tokens=prompt.max_tokens or self.workload.max_tokens,
            request_id=str(event_id),
            prompt_id=prompt.id,
            send_at_ns=planned_ns,
            max_tokens_param=self.endpoint.max_tokens_param,
            options=self.request_options(prompt),
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
        if failure is None:
            self.health.record_success()
        else:
            self.health.record_failure(failure.retry_after_s)
        return self.build_event(event_id, prompt, recorder, failure, planned_ns, nonce)

    def build_event(
        self,
        event_id: uuid.UUID,
        prompt: Prompt,
        recorder: StreamRecorder,
        failure: ProbeFailure | None,
        planned_ns: int | None,
        nonce: str | None = None,
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
            reasoning=recorder.reasoning,
            tool_chunks=recorder.tool_chunks,
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
            prompt_nonce=nonce,
            status="ok" if failure is None else "error",
            error_kind=failure.kind if failure is not None else None,
            error_detail=failure.detail[:500] if failure is not None else None,
            http_status=failure.http_status if failure is not None and failure.http_status else recorder.http_status,
            ttft_ms=metrics.ttft_ms,
            ttfa_ms=metrics.ttfa_ms,
            reasoning_ms=metrics.reasoning_ms,
            e2e_ms=metrics.e2e_ms,
            tpot_ms=metrics.tpot_ms,
            itl_p50_ms=metrics.itl_p50_ms,
            itl_p95_ms=metrics.itl_p95_ms,
            itl_max_ms=metrics.itl_max_ms,
            decode_tps=metrics.decode_tps,
            prompt_tokens=metrics.prompt_tokens,
            cached_prompt_tokens=metrics.cached_prompt_tokens,
            completion_tokens=metrics.completion_tokens,
            reasoning_tokens=metrics.reasoning_tokens,
            tool_calls=metrics.tool_calls,
            token_count_source=metrics.token_count_source,
            price_in_per_mtok=self.prices.input_per_mtok,
            price_cached_in_per_mtok=self.prices.cached_input_per_mtok,
            price_out_per_mtok=self.prices.output_per_mtok,
            price_reasoning_out_per_mtok=self.prices.reasoning_output_per_mtok,
            cost_usd=metrics.cost_usd,
            schedule_lag_ms=(sent_ns - planned_ns) / 1e6 if planned_ns is not None else None,
            tags=dict(self.workload.tags),
            server_prefill_ms=server.prefill_ms if (server := recorder.server_timings) is not None else None,
            server_decode_ms=server.decode_ms if server is not None else None,
            server_cached_tokens=server.cached_tokens if server is not None else None,
            stale_connection_retry=recorder.stale_connection_retries > 0,
        )


def health_policy(workload: Workload) -> HealthPolicy:
    """The workload's backoff after errors, Retry-After cap and circuit-breaker threshold."""
    spec = workload.backoff
    return HealthPolicy(
        backoff=Backoff(initial_s=spec.initial_ns / 1e9, max_s=spec.max_ns / 1e9, multiplier=2.0, jitter=0.5),
        max_retry_after_s=workload.max_retry_after_s,
        breaker_after=spec.breaker_after,
    )


def default_probe_id(workload: Workload) -> str:
    return workload.probe_id or f"{socket.gethostname()}-{workload.name}"[:200]


class WorkloadRun:
    """Every endpoint of one workload, probed concurrently on the running loop (the probe and the monitor).

    ``run()`` returns when every endpoint's schedule has ended, or after ``halt()`` once the requests in
    flight have finished; adapters it made itself are closed then.
    """

    def __init__(
        self,
        workload: Workload,
        sink: EventSink,
        *,
        api_keys: Mapping[str, SecretStr | None],
        clocks: Clocks | None = None,
        on_event: Callable[[RequestTiming], None] | None = None,
        adapters: Mapping[str, ProviderAdapter] | None = None,
        seed: int | None = None,
        summary: ProbeSummary | None = None,
    ) -> None:
        self.workload = workload
        self.clocks = clocks or Clocks()
        self.summary = summary or new_summary(workload)
        self.seed = seed
        prompts = workload_prompts(workload)
        anchor = (self.clocks.time_ns(), self.clocks.monotonic_ns())
        self._own: dict[str, ProviderAdapter] = {}
        if not adapters:
            self._own = {e.name: make_adapter(e, api_keys.get(e.name), workload) for e in workload.endpoints}
        chosen = dict(adapters) if adapters else self._own
        for name, adapter in chosen.items():
            reads = getattr(adapter, "socket_reads", None)
            self.summary.endpoints[name].socket_reads = reads if isinstance(reads, SocketReads) else None
        self.probes = [
            EndpointProbe(
                workload,
                endpoint,
                chosen[endpoint.name],
                prompts,
                sink,
                probe_id=default_probe_id(workload),
                clocks=self.clocks,
                anchor=anchor,
                summary=self.summary.endpoints[endpoint.name],
                on_event=on_event,
            )
            for endpoint in workload.endpoints
        ]

    def halt(self) -> None:
        for probe in self.probes:
            probe.halt()

    async def run(self) -> ProbeSummary:
        workload = self.workload
        base_seed = self.seed
        if base_seed is None:
            base_seed = getattr(workload.schedule, "seed", None) or random.randrange(2**31)
        started = self.clocks.monotonic_ns()
        try:
            async with asyncio.TaskGroup() as group:
                for number, probe in enumerate(self.probes):
                    group.create_task(probe.run(random.Random(base_seed + number)))
        finally:
            for adapter in self._own.values():
                await adapter.aclose()
        self.summary.warmup_requests = sum(p.warmups_done for p in self.probes)
        self.summary.elapsed_s = (self.clocks.monotonic_ns() - started) / 1e9
        self.summary.refresh()
        return self.summary


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
    run = WorkloadRun(
        workload,
        sink,
        api_keys=api_keys,
        clocks=clocks,
        on_event=on_event,
        adapters=adapters,
        seed=seed,
        summary=summary,
    )
    refresher = asyncio.create_task(refresh_every(lambda: (run.summary,)))
    if freeze_gc:
        # A full (gen 2) collection walks every object of every imported library: 100 ms pauses were seen on
        # this 2-core machine, stalling every stream's timestamps. Objects alive now are moved out of the
        # collector's way for the run and handed back afterwards. No collection first: it cost 30-50 ms of
        # CPU per run, and the little garbage frozen with them is collected after ``unfreeze``.
        gc.freeze()
    try:
        return await run.run()
    finally:
        refresher.cancel()
        if freeze_gc:
            gc.unfreeze()


def first_leaf(group: BaseExceptionGroup[SpoolError]) -> SpoolError:
    """The first error of a (nested) group: what the CLI shows when the spool stopped the probe."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def new_summary(workload: Workload) -> ProbeSummary:
    return ProbeSummary(
        workload=workload.name,
        probe_id=default_probe_id(workload),
        endpoints={e.name: EndpointSummary(e.name, e.provider_label) for e in workload.endpoints},
    )


def publisher_for(settings: Settings, workload: Workload, **overrides: object) -> KafkaPublisher:
    """A publisher to ``settings.topics.request_timings`` with a spool under ``settings.data_dir``."""
    spool = Path(settings.data_dir) / "spool" / f"{default_probe_id(workload)}.sqlite"
    config = PublisherConfig(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topics.request_timings,
        spool_path=spool,
        kafka_options=settings.kafka_client_options(),
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

"""Seeded ``RequestTiming`` generators for tests, benchmarks and the demo (no probe code needed).

``TimingFactory(seed)`` builds valid events with latencies from log-normal distributions; the same seed
yields the same events (ids included), so exact expected aggregates can be computed from the list.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenpulse.durations import NANOS_PER_SECOND
from tokenpulse.schemas import RequestTiming, encode

DEFAULT_START_NS = 1_780_000_020 * NANOS_PER_SECOND  # a whole minute, in 2026
HISTORICAL_MAX_AGE = "36500d"
"""The worker's ``max_event_age`` for tests and benchmarks that replay events with fixed, past timestamps."""


@dataclass(frozen=True)
class TimingKey:
    provider: str
    model: str
    workload: str = "chat"
    region: str | None = "eu-west"


def default_keys(count: int) -> list[TimingKey]:
    """``count`` distinct keys over a few providers and models."""
    providers = ["sim-a", "sim-b", "sim-c", "sim-d"]
    return [TimingKey(providers[i % len(providers)], f"model-{i}", "chat" if i % 3 else "rag") for i in range(count)]


def balanced_keys(count: int, partitions: int) -> list[TimingKey]:
    """``count`` keys (a multiple of ``partitions``) whose ``provider/model`` record keys hash to every
    partition equally often under Kafka's default partitioner, so a scale-out measurement measures the
    workers rather than how a handful of keys happened to hash."""
    from kafka.partitioner.default import murmur2

    if count % partitions:
        raise ValueError(f"count {count} must be a multiple of partitions {partitions}")
    per_partition = count // partitions
    chosen: dict[int, list[TimingKey]] = {p: [] for p in range(partitions)}
    candidate = 0
    while any(len(keys) < per_partition for keys in chosen.values()):
        key = default_keys(candidate + 1)[candidate]
        partition = (murmur2(f"{key.provider}/{key.model}".encode()) & 0x7FFFFFFF) % partitions
        if len(chosen[partition]) < per_partition:
            chosen[partition].append(key)
        candidate += 1
    return [key for p in range(partitions) for key in chosen[p]]


class TimingFactory:
    """Builds valid ``RequestTiming`` events from a seeded random generator."""

    def __init__(self, seed: int = 0, error_rate: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.error_rate = error_rate

    def event(self, key: TimingKey, started_at_ns: int, *, failed: bool | None = None) -> RequestTiming:
        rng = self.rng
        if failed is None:
            failed = rng.random() < self.error_rate
        prompt_tokens = rng.randint(20, 400)
        completion_tokens = rng.randint(2, 600)
        ttft_ms = rng.lognormvariate(5.5, 0.6)
        tpot_ms = rng.lognormvariate(2.8, 0.4)
        e2e_ms = ttft_ms + tpot_ms * (completion_tokens - 1)
        cost = (prompt_tokens * 0.5 + completion_tokens * 1.5) / 1_000_000
        common: dict[str, Any] = {
            "event_id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "probe_id": "probe-test",
            "started_at": started_at_ns,
            "provider": key.provider,
            "model": key.model,
            "endpoint": f"http://127.0.0.1:9000/{key.provider}/v1/chat/completions",
            "region": key.region,
            "workload": key.workload,
            "prompt_id": f"p{rng.randint(0, 9)}",
            "price_in_per_mtok": 0.5,
            "price_out_per_mtok": 1.5,
        }
        if failed:
            return RequestTiming(
                **common,
                status="error",
                error_kind="http_5xx",
                http_status=503,
                e2e_ms=rng.lognormvariate(4.0, 0.5),
                prompt_tokens=prompt_tokens,
            )
        return RequestTiming(
            **common,
            status="ok",
            http_status=200,
            ttft_ms=ttft_ms,
            e2e_ms=e2e_ms,
            tpot_ms=tpot_ms,
            itl_p50_ms=tpot_ms,
            itl_p95_ms=tpot_ms * 1.8,
            itl_max_ms=tpot_ms * 3.0,
            decode_tps=1000.0 / tpot_ms,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            token_count_source="usage",
            cost_usd=cost,
        )

    def stream(
        self,
        keys: Sequence[TimingKey],
        count: int,
        *,
        start_ns: int = DEFAULT_START_NS,
        interval_ns: int = NANOS_PER_SECOND // 10,
        jitter_ns: int = 0,
    ) -> Iterator[RequestTiming]:
        """``count`` events round-robin over ``keys``, one every ``interval_ns``, each up to ``jitter_ns``
        earlier than its slot (so out of order, but never before ``start_ns``)."""
        for i in range(count):
            jitter = self.rng.randint(0, jitter_ns) if jitter_ns else 0
            yield self.event(keys[i % len(keys)], max(start_ns, start_ns + i * interval_ns - jitter))


@dataclass
class ExactWindow:
    """What a window must contain, computed exactly from the events (the reference for tests and benches).

    Latencies are those of successful requests only, as the contract says.
    """

    count: int
    error_count: int
    ttft_ms: list[float]
    e2e_ms: list[float]
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int


def exact_windows(
    events: Sequence[RequestTiming], size_ns: int, step_ns: int | None = None
) -> dict[tuple[str, str, str, str | None, int], ExactWindow]:
    """Exact contents of every window (keyed by provider, model, workload, region, window end) over
    unique events (the first copy of an ``event_id`` wins)."""
    step = step_ns or size_ns
    seen: set[uuid.UUID] = set()
    windows: dict[tuple[str, str, str, str | None, int], ExactWindow] = {}
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        t = event.started_at
        last_start = t - t % step
        for start in range(last_start - size_ns + step, last_start + 1, step):
            if start < 0:
                continue
            key = (event.provider, event.model, event.workload, event.region, start + size_ns)
            window = windows.setdefault(key, ExactWindow(0, 0, [], [], 0.0, 0, 0))
            window.count += 1
            window.error_count += event.status == "error"
            if event.status == "ok":
                window.e2e_ms.append(event.e2e_ms)
                if event.ttft_ms is not None:
                    window.ttft_ms.append(event.ttft_ms)
            window.cost_usd += event.cost_usd
            window.prompt_tokens += event.prompt_tokens
            window.completion_tokens += event.completion_tokens
    return windows


def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create topics (``partitions`` each) unless they exist."""
    from tokenpulse.topics import ensure_topics

    ensure_topics(bootstrap, dict.fromkeys(names, partitions))


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Produce ``(key, value)`` records with the default partitioner (key hash); returns how many."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks="all", enable_idempotence=True
    )
    futures = []
    try:
        for key, value in records:
            futures.append(producer.send(topic, key=key, value=value))
        producer.flush()
    finally:
        producer.close()
    failed = [future.exception for future in futures if not future.succeeded()]
    if failed:  # flush() does not raise for a send whose retries ran out: a test must not lose input silently
        raise RuntimeError(f"{len(failed)} of {len(futures)} records not delivered to {topic}: {failed[0]!r}")
    return len(futures)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset of every partition of ``topic`` (0 where none is committed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions}
    finally:
        consumer.close()


def timing_records(events: Iterable[RequestTiming]) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` as the probes publish them: key ``provider/model``, value the event JSON."""
    for event in events:
        yield event.kafka_key(), encode(event)


@dataclass
class ConsumedRecord:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


def consume_all(
    bootstrap: str, topic: str, *, until: Callable[[list[ConsumedRecord]], bool], timeout_s: float = 60.0
) -> list[ConsumedRecord]:
    """Read ``topic`` from the beginning until ``until(records)`` holds or ``timeout_s`` passes."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    records.append(ConsumedRecord(r.key, r.value, dict(r.headers or []), r.partition, r.offset))
            if until(records):
                break
    finally:
        consumer.close()
    return records


def latest_window_stats(records: Iterable[ConsumedRecord]) -> dict[tuple[str, str, str, str | None, str, int], Any]:
    """The last ``WindowStats`` per window (what a compacting or overwriting consumer keeps)."""
    from tokenpulse.schemas import WindowStats, decode

    latest: dict[tuple[str, str, str, str | None, str, int], Any] = {}
    for record in records:
        if record.value is None:
            continue
        stats = decode(WindowStats, record.value)
        latest[(stats.provider, stats.model, stats.workload, stats.region, stats.window, stats.window_end)] = stats
    return latest


class WorkerProcess:
    """A ``python -m streams`` worker subprocess for tests, benchmarks and the demo.

    ``env`` must carry ``TOKENPULSE_KAFKA_BOOTSTRAP`` and ``TOKENPULSE_TOPIC_PREFIX``; output goes to
    ``log_path`` so a failing test can show it.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no leaving the group."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

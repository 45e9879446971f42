"""The write-ahead spool: probe CPU overhead with it, and how fast 100,000 spooled events replay to Kafka.

1. Probe overhead: the same sequential requests to a simulator process (as ``probe_overhead.py``), CPU time
   of this process (the spool writer's thread included) for the bare timing loop, the probe with an
   in-memory sink, and the probe publishing through ``KafkaPublisher`` with a broker that never answers,
   so every event is written to the SQLite WAL and stays there (the WAL's whole cost, no Kafka client).
   Sides alternate within each repetition; figures are medians of per-repetition ratios.
2. Replay: 100,000 events (about 1 kB each) written to a spool, then a publisher started against the
   stack's broker (TOKENPULSE_KAFKA_BOOTSTRAP) sends them all; baseline in the same run: a bare
   kafka-python producer (same settings: acks=all, idempotent, gzip) sending the same records from memory.
Run: .venv/bin/python bench/spool_wal.py [requests] [--reps N] [--replay N]
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from probe_common import common_args, median, probe, workload
from probe_overhead import TOKENS, bare_timing, cpu

from tokenpulse.producers.probe import run_async
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig, kafka_producer
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from tokenpulse.producers.spool import Spool
from tokenpulse.schemas import encode
from tokenpulse.testing.sinks import make_timing


def no_broker(config: PublisherConfig) -> Any:
    raise ConnectionError("no broker (bench: every event stays in the WAL)")


def overhead(n: int, reps: int, loop: Any) -> None:
    profile = LatencyProfile(ttft_ms=0, tokens_per_s=1_000_000, jitter=0, role_chunk=True)
    cpu_s: dict[str, list[float]] = {"bare timing": [], "probe": [], "probe + WAL": [], "probe + WAL nosync": []}
    written = 0
    with SimulatorProcess(SimulatorConfig(endpoints={"sim": profile})) as sim, tempfile.TemporaryDirectory() as tmp:
        url = sim.endpoint_url("sim")
        probe(workload(url, 10, {"kind": "closed", "concurrency": 1}, TOKENS, warmup=0), loop)  # warm-up
        for rep in range(reps):
            cpu_s["bare timing"].append(cpu(lambda: run_async(bare_timing(url, n), loop)))
            w = workload(url, n, {"kind": "closed", "concurrency": 1}, TOKENS, warmup=0)
            cpu_s["probe"].append(cpu(lambda: probe(w, loop)))  # noqa: B023
            for side, fsync in (("probe + WAL", True), ("probe + WAL nosync", False)):
                path = Path(tmp) / f"s{rep}-{fsync}.sqlite"
                config = PublisherConfig("127.0.0.1:1", "bench.request-timings", path, spool_fsync=fsync)
                publisher = KafkaPublisher(config, no_broker)

                def with_wal() -> None:
                    probe(w, loop, publisher)  # noqa: B023
                    deadline = time.monotonic() + 30
                    while publisher.spool.pending_count() < n and time.monotonic() < deadline:  # noqa: B023
                        time.sleep(0.001)

                cpu_s[side].append(cpu(with_wal))
                written += publisher.close(timeout_s=0.1).pending_in_spool
    assert written == 2 * n * reps, f"{written} of {2 * n * reps} events in the WAL"
    print(f"1. overhead: {n} requests x {TOKENS} tokens, sequential, {reps} repetitions (medians)")
    for side, values in cpu_s.items():
        print(f"   {side:<18}: {median(values) / n * 1e3:.3f} ms CPU/request")
    pairs = [("probe + WAL", "probe"), ("probe + WAL nosync", "probe"), ("probe", "bare timing")]
    pairs += [("probe + WAL", "bare timing"), ("probe + WAL nosync", "bare timing")]
    for side, base in pairs:
        ratios = [a / b for a, b in zip(cpu_s[side], cpu_s[base], strict=True)]
        print(f"   {side} / {base}: {median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})")


def replay(count: int) -> None:
    bootstrap = os.environ.get("TOKENPULSE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        print('2. replay: skipped (no broker; eval "$(.venv/bin/tokenpulse stack env)")')
        return
    records = [(e.kafka_key(), encode(e)) for e in (make_timing(event_id=uuid.uuid4()) for _ in range(count))]
    size_mb = sum(len(k) + len(v) for k, v in records) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        topic = f"bench-replay-{uuid.uuid4().hex[:8]}"
        config = PublisherConfig(bootstrap, topic, Path(tmp) / "replay.sqlite")
        spool = Spool(config.spool_path)
        started = time.perf_counter()
        for i in range(0, count, 1000):
            spool.append([(topic, k, v) for k, v in records[i : i + 1000]])
        fill_s = time.perf_counter() - started
        spool.close()
        # baseline: the bare producer with the publisher's settings, the same records from memory
        producer = kafka_producer(PublisherConfig(bootstrap, topic + "-bare", Path(tmp) / "unused"))
        started = time.perf_counter()
        for key, value in records:
            producer.send(topic + "-bare", key=key, value=value)
        producer.flush()
        bare_s = time.perf_counter() - started
        producer.close()
        started = time.perf_counter()
        publisher = KafkaPublisher(config)
        assert publisher.drain(600), "replay did not finish"
        replay_s = time.perf_counter() - started
        stats = publisher.close()
    assert stats.delivered == count and stats.pending_in_spool == 0, stats
    print(f"2. replay: {count:,} events, {size_mb:.0f} MB; spool filled at {count / fill_s:,.0f} events/s")
    print(f"   bare kafka-python producer from memory: {count / bare_s:,.0f} events/s ({bare_s:.1f} s)")
    print(
        f"   replay from the spool (connect included): {count / replay_s:,.0f} events/s ({replay_s:.1f} s), "
        f"{bare_s / replay_s:.2f}x the bare producer's rate"
    )


def main() -> None:
    parser = common_args(__doc__ or "", default_reps=3)
    parser.add_argument("requests", type=int, nargs="?", default=300)
    parser.add_argument("--replay", type=int, default=100_000, help="events to spool and replay")
    args = parser.parse_args()
    overhead(args.requests, args.reps, args.loop)
    replay(args.replay)


if __name__ == "__main__":
    main()

"""Worker throughput against a real broker: raw aiokafka ceiling, a stock count-only faust agent, our
worker, and scale-out (2 workers vs 1 in one consumer group), all on the same topic in one run.

    eval "$(.venv/bin/tokenpulse stack env --home /tmp/tphome)"   # or any TOKENPULSE_KAFKA_BOOTSTRAP
    .venv/bin/python bench/worker_throughput.py [--events 200000] [--keys 20] [--partitions 6] [--profile]

Figures are events/s and ratios within this run (the machine is shared, absolute numbers drift).
Event time: 24 keys chosen so each partition gets the same backlog (``--unbalanced``: keys as they come),
each probed about every 0.5 s (200,000 events span ~70 minutes of event time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import os
import pstats
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

NANOS = 1_000_000_000


def child(args: argparse.Namespace) -> None:
    """Run one faust app (count-only agent or our worker) until it has consumed ``--events`` events."""
    import faust

    from tokenpulse.streams.app import WorkerConfig, build_worker, faust_settings, tune_runtime
    from tokenpulse.testing.streams import HISTORICAL_MAX_AGE

    tune_runtime()  # the same for both agents: uvloop and the GC threshold
    from tokenpulse.config import load_settings

    settings = load_settings()
    config = WorkerConfig(
        partitions=args.partitions, app_id=args.group, log_level="warning", max_event_age=HISTORICAL_MAX_AGE
    )
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile() if args.profile else None
    state = {"first": 0.0, "count": 0}

    def report() -> None:
        elapsed = time.perf_counter() - state["first"]
        print(json.dumps({"mode": args.mode, "events": state["count"], "seconds": elapsed}), flush=True)
        if profiler is not None:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
            print(out.getvalue(), file=sys.stderr, flush=True)
        os._exit(0)

    if args.mode == "count":
        app = faust.App(args.group, **faust_settings(settings, config, data_dir))
        topic = app.topic(settings.topics.request_timings, key_serializer="raw", value_serializer="raw")

        @app.agent(topic)
        async def count(stream):  # type: ignore[no-untyped-def]
            async for _event in stream.events():
                if not state["count"]:
                    state["first"] = time.perf_counter()
                    if profiler:
                        profiler.enable()
                state["count"] += 1

        @app.timer(0.1)  # type: ignore[untyped-decorator]
        async def done() -> None:
            if state["count"] >= args.events:
                report()

    else:
        worker = build_worker(settings, config)
        app = worker.app
        processor = worker.processor
        original = processor.on_message

        def on_message(event):  # type: ignore[no-untyped-def]
            if not state["first"]:
                state["first"] = time.perf_counter()
                if profiler:
                    profiler.enable()
            original(event)

        processor.on_message = on_message  # type: ignore[method-assign]

        @app.timer(0.1)  # type: ignore[untyped-decorator]
        async def done() -> None:
            state["count"] = processor.counters.consumed
            if state["count"] >= args.events and processor.pending == 0:
                report()

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


async def raw_ceiling(bootstrap: str, topic: str, events: int, partitions: int) -> float:
    """aiokafka getmany + the same decode and PartitionWindows aggregation, no faust."""
    from aiokafka import AIOKafkaConsumer

    from tokenpulse.schemas import RequestTiming, SchemaError, decode
    from tokenpulse.streams.engine import PartitionWindows, WindowConfig

    config = WindowConfig.parse(["1m", "5m/1m"], "10s")
    states = {p: PartitionWindows(p, config) for p in range(partitions)}
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    first = 0.0
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for tp, messages in batches.items():
                state = states[tp.partition]
                for message in messages:
                    if not first:
                        first = time.perf_counter()
                    seen += 1
                    with contextlib.suppress(SchemaError):
                        state.handle(message.offset, decode(RequestTiming, message.value))
                state.take_emitted()
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - first)


def run_child(mode: str, group: str, env: dict[str, str], args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    argv = [
        sys.executable,
        __file__,
        "--child",
        "--mode",
        mode,
        "--group",
        group,
        "--events",
        str(args.events),
        "--partitions",
        str(args.partitions),
        "--data-dir",
        str(data_dir),
    ]
    if args.profile:
        argv.append("--profile")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    # faust redirects stdout into its log, so the JSON line may carry a log prefix
    output = (result.stdout + result.stderr).splitlines()
    lines = [line[line.index('{"mode"') :] for line in output if '{"mode"' in line]
    if not lines:
        raise SystemExit(f"{mode} child failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if args.profile:
        print(f"--- profile of {mode} (tottime) ---\n{result.stderr[-6000:]}")
    result_doc: dict[str, Any] = json.loads(lines[-1])
    return result_doc


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its live children, in clock ticks (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            with contextlib.suppress(OSError):  # exited meanwhile
                ticks += _cpu_ticks(int(child))
    return ticks


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def drain_time(workers: int, group: str, env: dict[str, str], args: argparse.Namespace, data_dir: Path) -> float:
    """Seconds from the group's first commit to its last, for ``workers`` worker processes.

    Also prints the CPU each worker used over that interval and how busy the whole machine was (in cores),
    so a scale-out figure on a shared 2-core machine can be read against what CPU was actually free.
    """
    from kafka import KafkaConsumer

    from tokenpulse.streams.cli import worker_argv
    from tokenpulse.testing.streams import HISTORICAL_MAX_AGE

    topic = f"{env['TOKENPULSE_TOPIC_PREFIX']}.request-timings"
    probe = KafkaConsumer(bootstrap_servers=env["TOKENPULSE_KAFKA_BOOTSTRAP"], group_id=group, enable_auto_commit=False)
    tps = _tps(probe, topic)
    backlog = {tp.partition: offset for tp, offset in probe.end_offsets(tps).items()}
    end = sum(backlog.values())
    if workers > 1:
        bound = _best_speed_up(list(backlog.values()), workers)
        print(
            f"  backlog per partition {dict(sorted(backlog.items()))}: "
            f"an even split of the partitions allows at most x{bound:.2f}"
        )
    argv = worker_argv(
        partitions=args.partitions, max_event_age=HISTORICAL_MAX_AGE, extra=("--app-id", group, "--log-level", "info")
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = [(data_dir / f"w{i}.log").open("wb") for i in range(workers)]  # rebalances and restores, for reading
    procs = [
        subprocess.Popen(
            argv, env=dict(env, TOKENPULSE_DATA_DIR=str(data_dir / f"w{i}")), stdout=log, stderr=subprocess.STDOUT
        )
        for i, log in enumerate(logs)
    ]
    marks: list[str] = []
    started = None
    cpu_start: tuple[list[int], tuple[int, int]] = ([], (0, 0))
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            committed = sum(probe.committed(tp) or 0 for tp in tps)
            now = time.perf_counter()
            while started is not None and len(marks) < 3 and committed >= end * (len(marks) + 1) // 4:
                marks.append(f"{100 * (len(marks) + 1) // 4}% at {now - started[0]:.1f} s")
            if committed and started is None:
                started = (now, committed)
                cpu_start = ([_cpu_ticks(p.pid) for p in procs], _machine_ticks())
            if committed >= end and started is not None:
                # rate over the events committed after the first commit, scaled to the whole backlog
                elapsed = now - started[0]
                hz = os.sysconf("SC_CLK_TCK")
                ticks = zip(procs, cpu_start[0], strict=True)
                per_worker = [(_cpu_ticks(p.pid) - t0) / hz / elapsed for p, t0 in ticks]
                busy, total = _machine_ticks()
                cores = os.cpu_count() or 1
                machine = (busy - cpu_start[1][0]) / max(total - cpu_start[1][1], 1) * cores
                print(
                    f"  {workers} worker(s): CPU per worker {', '.join(f'{c:.2f}' for c in per_worker)} cores, "
                    f"machine busy {machine:.2f} of {cores} cores over the drain; committed {', '.join(marks)}, "
                    f"100% at {elapsed:.1f} s; logs {data_dir}/w*.log"
                )
                return float(elapsed * end / max(end - started[1], 1))
            time.sleep(0.1)
        raise SystemExit(f"{workers} worker(s) did not drain the backlog")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        for log in logs:
            log.close()
        if workers > 1:
            _print_assignment(data_dir, workers, backlog)
        probe.close()


def _print_assignment(data_dir: Path, workers: int, backlog: dict[int, int]) -> None:
    """Which partitions each worker restored (its last assignment) and the speed-up that split allows."""
    shares = []
    for i in range(workers):
        text = (data_dir / f"w{i}.log").read_text(errors="replace")
        owned = sorted({int(m) for m in re.findall(r"partition (\d+): restored", text)})
        shares.append((owned, sum(backlog.get(p, 0) for p in owned)))
    busiest = max(load for _, load in shares) or 1
    print(
        f"  partitions per worker {[owned for owned, _ in shares]}: this split allows at most "
        f"x{sum(backlog.values()) / busiest:.2f}"
    )


def _best_speed_up(loads: list[int], workers: int) -> float:
    """Total over the busiest worker's share, for the best assignment of equally many partitions each."""
    best = sum(loads)
    per_worker = -(-len(loads) // workers)
    for groups in itertools.product(range(workers), repeat=len(loads)):
        if max(groups.count(w) for w in range(workers)) > per_worker:
            continue
        best = min(best, max(sum(n for n, g in zip(loads, groups, strict=True) if g == w) for w in range(workers)))
    return sum(loads) / max(best, 1)


def _tps(consumer: Any, topic: str) -> list[Any]:
    from kafka import TopicPartition

    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=24, help="a multiple of --partitions")
    parser.add_argument(
        "--unbalanced",
        action="store_true",
        help="keys as they come (partitions get unequal backlogs) instead of balanced ones",
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--skip-scale-out", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true", help="only the scale-out measurement")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--mode", default="worker")
    parser.add_argument("--group", default="")
    parser.add_argument("--data-dir", default="")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from tokenpulse.testing.streams import (
        TimingFactory,
        balanced_keys,
        create_topics,
        default_keys,
        produce,
        timing_records,
    )

    bootstrap = os.environ.get("TOKENPULSE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit('set TOKENPULSE_KAFKA_BOOTSTRAP, e.g. eval "$(tokenpulse stack env)"')
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.request-timings"
    create_topics(bootstrap, [topic, f"{prefix}.window-stats", f"{prefix}.request-timings.dlq"], args.partitions)
    keys = default_keys(args.keys) if args.unbalanced else balanced_keys(args.keys, args.partitions)
    records = list(timing_records(TimingFactory(seed=1).stream(keys, args.events, interval_ns=NANOS * 2 // 100)))
    size = sum(len(v) for _, v in records) / len(records)
    t = time.perf_counter()
    produce(bootstrap, topic, records)
    print(
        f"produced {len(records)} events of {size:.0f} bytes avg, {args.keys} keys, "
        f"{args.partitions} partitions in {time.perf_counter() - t:.1f} s"
    )
    data_dir = Path(f"/tmp/{prefix}")
    env = dict(os.environ, TOKENPULSE_TOPIC_PREFIX=prefix, TOKENPULSE_DATA_DIR=str(data_dir))

    if not args.skip_throughput:
        throughput(bootstrap, topic, env, args, data_dir)
    if not args.skip_scale_out:
        one = drain_time(1, f"{prefix}-one", env, args, data_dir / "one")
        two = drain_time(2, f"{prefix}-two", env, args, data_dir / "two")
        print(f"drain {args.events} events: 1 worker {one:.1f} s, 2 workers {two:.1f} s, speed-up x{one / two:.2f}")


def throughput(bootstrap: str, topic: str, env: dict[str, str], args: argparse.Namespace, data_dir: Path) -> None:
    prefix = env["TOKENPULSE_TOPIC_PREFIX"]
    ceiling = asyncio.run(raw_ceiling(bootstrap, topic, args.events, args.partitions))
    print(f"raw aiokafka getmany + decode + windows: {ceiling:,.0f} events/s (ceiling)")
    count = run_child("count", f"{prefix}-count", env, args, data_dir / "count")
    count_rate = count["events"] / count["seconds"]
    print(f"stock faust count-only agent:            {count_rate:,.0f} events/s")
    ours = run_child("worker", f"{prefix}-worker", env, args, data_dir / "worker")
    our_rate = ours["events"] / ours["seconds"]
    print(f"tokenpulse worker (decode, dedup, windows, acks after flush): {our_rate:,.0f} events/s")
    print(f"  ratio worker / count-only agent: {our_rate / count_rate:.2f}")
    print(f"  ratio worker / raw ceiling:      {our_rate / ceiling:.2f}")


if __name__ == "__main__":
    main()

"""Soak: ``tokenpulse monitor`` against the simulator at 50 requests/s; RSS at start, middle and end.

The monitor runs as deployed (a subprocess, real Kafka from ``tokenpulse stack env``, JSON logs): an open-loop
workload at 50 requests/s over two simulated endpoints plus a periodic one with unique prompts. Its resident
memory (``VmRSS``) is read every second; "start" is after the first 10% of the run (imports, connections,
Kafka client warmed up). The target is a flat line: end within 5% of start. Baselines in the same run: what
the per-request lists of the old summary (TTFT, decode rate, lag: three floats per request) would have grown
by over the same requests, and how late a bare asyncio timer on the same Poisson schedule wakes in this
(benchmark) process meanwhile, which is the machine's floor for schedule lag. It also prints the monitor's
own schedule lag p99 (``/metrics``) at start, middle and end, and checks that SIGTERM exits 0 with every
event delivered.
Run: eval "$(tokenpulse stack env)" && .venv/bin/python bench/monitor_soak.py [--seconds 600] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from tokenpulse.producers.scheduler import sleep_until
from tokenpulse.producers.simulator import LatencyProfile, SimulatorConfig, SimulatorProcess
from tokenpulse.testing.metrics import Samples

MIB = 1024 * 1024
# A float in a list: the 8-byte pointer plus the 24-byte float object it points to.
LIST_FLOAT_BYTES = 32


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def timer_lags_ms(rate: float, stop: threading.Event, lags: list[float]) -> None:
    """How late ``sleep_until`` (the probe's precise wait) wakes on a Poisson schedule at ``rate``."""

    async def run() -> None:
        rng = random.Random(3)
        planned = time.monotonic_ns() + 5_000_000
        while not stop.is_set():
            planned += int(rng.expovariate(rate) * 1e9)
            await sleep_until(planned)
            lags.append((time.monotonic_ns() - planned) / 1e6)

    asyncio.run(run())


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")


def lag_p99(metrics: Samples) -> str:
    found = {
        dict(k)["workload"] + "/" + dict(k)["endpoint"]: v
        for k, v in metrics.labelled("tokenpulse_probe_schedule_lag_p99_ms").items()
    }
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(found.items()))


def workloads(sim: SimulatorProcess, rate: float, folder: Path) -> None:
    def endpoint(name: str) -> dict[str, object]:
        prices = [{"effective_from": "2026-01-01", "input_per_mtok": 0.1, "output_per_mtok": 0.4}]
        return {"name": name, "kind": "openai", "base_url": sim.endpoint_url(name), "model": name, "prices": prices}

    steady = {
        "name": "soak-open",
        "endpoints": [endpoint("a"), endpoint("b")],
        "prompts": {"synthetic": {"count": 64, "input_tokens": 100, "output_tokens": 32}},
        "schedule": {"kind": "open", "rate_per_s": rate / 2},
    }
    periodic = {
        "name": "soak-periodic",
        "endpoints": [endpoint("a")],
        "prompts": {"synthetic": {"count": 8, "input_tokens": 100, "output_tokens": 16, "unique": True}},
        "schedule": {"kind": "periodic", "every": "10s", "requests": 3, "concurrency": 3, "jitter": "2s"},
    }
    (folder / "open.yaml").write_text(yaml.safe_dump(steady))
    (folder / "periodic.yaml").write_text(yaml.safe_dump(periodic))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the soak (600: the target)")
    parser.add_argument("--rate", type=float, default=50.0, help="open-loop requests per second in total")
    args = parser.parse_args()
    if not os.environ.get("TOKENPULSE_KAFKA_BOOTSTRAP"):
        sys.exit('set the stack first: eval "$(tokenpulse stack env)"')

    profile = LatencyProfile(ttft_ms=30, ttft_p95_ms=60, tokens_per_s=800)
    config = SimulatorConfig(endpoints={"a": profile, "b": profile})
    with tempfile.TemporaryDirectory() as scratch, SimulatorProcess(config) as sim:
        folder = Path(scratch) / "workloads"
        folder.mkdir()
        workloads(sim, args.rate, folder)
        port = free_port()
        env = dict(
            os.environ, TOKENPULSE_TOPIC_PREFIX=f"soak-{int(time.time())}", TOKENPULSE_DATA_DIR=str(Path(scratch) / "d")
        )
        log_path = Path(scratch) / "monitor.log"
        argv = [sys.executable, "-m", "tokenpulse", "monitor", "-w", str(folder), "--no-live", "--log-format", "json"]
        argv += ["--metrics-port", str(port)]
        with open(log_path, "wb") as log:
            monitor = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        stop_timer = threading.Event()
        timer_lags: list[float] = []
        timer = threading.Thread(target=timer_lags_ms, args=(args.rate, stop_timer, timer_lags), daemon=True)
        timer.start()
        lag_at: dict[str, str] = {}
        try:
            started = time.monotonic()
            samples: list[tuple[float, int]] = []
            while (elapsed := time.monotonic() - started) < args.seconds:
                if monitor.poll() is not None:
                    sys.exit(f"the monitor exited with {monitor.returncode}:\n{log_path.read_text()[-3000:]}")
                samples.append((elapsed, rss_bytes(monitor.pid)))
                for name, fraction in (("start", 0.1), ("middle", 0.5)):
                    if name not in lag_at and elapsed >= fraction * args.seconds:
                        lag_at[name] = lag_p99(Samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text))
                time.sleep(min(1.0, max(0.0, args.seconds - elapsed)))
            samples.append((time.monotonic() - started, rss_bytes(monitor.pid)))
            cpu_used_s, wall_s = cpu_s(monitor.pid), time.monotonic() - started
            metrics = Samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
            lag_at["end"] = lag_p99(metrics)
            monitor.send_signal(signal.SIGTERM)
            code = monitor.wait(120)
        finally:
            stop_timer.set()
            if monitor.poll() is None:
                monitor.kill()
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]

    def at(fraction: float) -> tuple[float, int]:
        return min(samples, key=lambda s: abs(s[0] - fraction * args.seconds))

    (t0, start), (t1, middle), (t2, end) = at(0.1), at(0.5), at(1.0)
    requests = sum(v for k, v in metrics.labelled("tokenpulse_probe_requests_total").items())
    stopped: dict[str, object] = next(
        (line for line in reversed(lines) if line.get("message", "").startswith("monitor stopped")), {}
    )
    print(f"monitor soak: {args.seconds:.0f} s at {args.rate:g} requests/s (+ a periodic burst of 3 every 10 s)")
    print(f"  RSS start  (t={t0:5.0f} s): {start / MIB:7.1f} MiB")
    print(f"  RSS middle (t={t1:5.0f} s): {middle / MIB:7.1f} MiB  ({100 * (middle - start) / start:+.1f}% vs start)")
    print(f"  RSS end    (t={t2:5.0f} s): {end / MIB:7.1f} MiB  ({100 * (end - start) / start:+.1f}% vs start)")
    low, high = min(s[1] for s in samples) / MIB, max(s[1] for s in samples) / MIB
    print(f"  RSS min/max over the run (start-up included): {low:.1f} / {high:.1f} MiB")
    skipped = sum(metrics.labelled("tokenpulse_probe_skipped_total").values())
    lists_mib = requests * 3 * LIST_FLOAT_BYTES / MIB
    print(
        f"  monitor CPU: {cpu_used_s:.1f} s in {wall_s:.0f} s ({100 * cpu_used_s / wall_s:.0f}% of a core), "
        f"{1000 * cpu_used_s / max(requests, 1):.2f} ms per request; slots skipped: {skipped:.0f}"
    )
    print(f"  requests measured: {requests:.0f}; baseline: per-request lists would have grown by {lists_mib:.2f} MiB")
    for name in ("start", "middle", "end"):
        print(f"  schedule lag p99 since start, ms, at {name}: {lag_at.get(name, '-')}")
    print(
        f"  baseline: a bare precise timer in this process, p99 {p99(timer_lags):.2f} ms over {len(timer_lags)} wakes"
    )
    print(
        f"  SIGTERM: exit {code}; published {stopped.get('published')}, delivered {stopped.get('delivered')}, "
        f"left in spool {stopped.get('pending_in_spool')}"
    )
    flat = abs(end - start) <= 0.05 * start
    print(f"  flat within 5%: {'yes' if flat else 'NO'}")


if __name__ == "__main__":
    main()

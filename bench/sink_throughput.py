"""Sink throughput into InfluxDB, as a ratio against influxdb-client writing the same points directly.

Usage: eval "$(tokenpulse stack env)"; python bench/sink_throughput.py [N] [ROUNDS]

Both runs write the same N points into fresh buckets of the same influxd, in this process:

* direct: influxdb-client's synchronous write API posting prebuilt lines (``sinks.lineprotocol``) in
  10,000-line batches: the ceiling a sink could reach on this machine;
* sink: ``SinkRunner`` with the ``llm_request`` sink over a topic that already holds the N events, so it
  reads them from Kafka, validates each one, builds its line, writes with its own retry loop and commits
  offsets after InfluxDB acknowledged. Timed from the first acknowledged batch to the last (the consumer
  group join is start-up, not throughput); the first batch is left out of the count.

The runs alternate ROUNDS times (default 2) so that a noisy neighbour on the machine hits both; each ratio
compares a sink run with the direct run just before it. Process CPU (this process, influxd when its pid
is found) is printed per run, in cores, to show where the machine's time went.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass

from influxdb_client.client.write_api import SYNCHRONOUS

from tokenpulse.schemas import encode
from tokenpulse.sinks.lineprotocol import request_line
from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.testing.services import InfluxEndpoint, unique_name
from tokenpulse.testing.sinks import BASE_NS, make_timing, produce, settings_for

BATCH = 10_000


@dataclass
class Run:
    rate: float
    cores_self: float
    cores_influxd: float | None


def _influxd_pid() -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    argv0 = handle.read().split(b"\0", 1)[0]
            except OSError:
                continue
            if argv0.endswith(b"/influxd"):
                return int(entry)
    return None


def _cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    def __init__(self, influxd: int | None) -> None:
        self.influxd = influxd
        self.t0, self.p0, self.i0 = time.perf_counter(), time.process_time(), _cpu_s(influxd)

    def cores(self) -> tuple[float, float | None]:
        wall = time.perf_counter() - self.t0
        influx_now = _cpu_s(self.influxd)
        influx = None if influx_now is None or self.i0 is None else (influx_now - self.i0) / wall
        return (time.process_time() - self.p0) / wall, influx


def direct_run(server: InfluxEndpoint, lines: list[str], influxd: int | None) -> Run:
    bucket = server.with_new_bucket("bench-direct")
    with bucket.client() as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        meter = CpuMeter(influxd)
        for i in range(0, len(lines), BATCH):
            api.write(bucket.bucket, bucket.org, "\n".join(lines[i : i + BATCH]).encode())
        wall = time.perf_counter() - meter.t0
        cores = meter.cores()
    return Run(len(lines) / wall, *cores)


def sink_run(server: InfluxEndpoint, bootstrap: str, values: list[bytes], influxd: int | None) -> Run:
    n = len(values)
    bucket = server.with_new_bucket("bench-sink")
    settings = settings_for(bootstrap, bucket, unique_name("bench"))
    produce(bootstrap, settings.topics.request_timings, values)  # the whole backlog waits in Kafka first
    runner = SinkRunner(settings, sinks=("llm_request",))
    runner.start()
    try:
        sink = runner.kafka_sinks[0]
        while sink.stats.written == 0:
            time.sleep(0.002)
        first, meter = sink.stats.written, CpuMeter(influxd)
        deadline = meter.t0 + 600
        while sink.stats.written < n and time.perf_counter() < deadline:
            time.sleep(0.002)
        wall = time.perf_counter() - meter.t0
        cores = meter.cores()
        if sink.stats.written != n or sink.stats.dead_lettered:
            raise SystemExit(f"sink wrote {sink.stats.written} of {n} points ({sink.stats.dead_lettered} dead letters)")
    finally:
        runner.stop()
    return Run((n - first) / wall, *cores)


def _cores(run: Run) -> str:
    influx = "n/a" if run.cores_influxd is None else f"{run.cores_influxd:.2f}"
    return f"(CPU cores: python {run.cores_self:.2f}, influxd {influx})"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    env = os.environ
    server = InfluxEndpoint(
        env["TOKENPULSE_INFLUX_URL"],
        env["TOKENPULSE_INFLUX_TOKEN"],
        env.get("TOKENPULSE_INFLUX_ORG", "tokenpulse"),
        "unused",
    )
    bootstrap = env["TOKENPULSE_KAFKA_BOOTSTRAP"]
    events = [make_timing(started_at=BASE_NS + i * 1000, provider=f"p{i % 4}", ttft_ms=100 + i % 97) for i in range(n)]
    lines = [request_line(e) for e in events]
    values = [encode(e) for e in events]
    # Only bytes and str stay alive: the benchmark's own 200k models must not slow the garbage collector
    # down for the sink (a sink process holds no such heap).
    del events
    gc.collect()
    influxd = _influxd_pid()

    print(f"points per run: {n:,}; rounds: {rounds}")
    ratios: list[float] = []
    sink_rates: list[float] = []
    for round_no in range(1, rounds + 1):
        direct = direct_run(server, lines, influxd)
        sink = sink_run(server, bootstrap, values, influxd)
        ratios.append(sink.rate / direct.rate)
        sink_rates.append(sink.rate)
        print(
            f"round {round_no}: direct influxdb-client ({BATCH:,}-line batches): {direct.rate:,.0f} points/s "
            f"{_cores(direct)}"
        )
        print(
            f"round {round_no}: sink (Kafka getmany -> validate -> line protocol -> write -> commit): "
            f"{sink.rate:,.0f} points/s {_cores(sink)}"
        )
        print(f"round {round_no}: ratio sink/direct: {ratios[-1]:.2f}")
    print(
        f"median sink rate: {statistics.median(sink_rates):,.0f} points/s; "
        f"median ratio sink/direct: {statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()

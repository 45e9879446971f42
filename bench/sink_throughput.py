"""Sink throughput into InfluxDB, as a ratio against influxdb-client writing the same points directly.

Usage: eval "$(tokenpulse stack env)"; python bench/sink_throughput.py [N]
Both runs write the same N points (built by sinks.lineprotocol) into fresh buckets of the same influxd;
the sink run also reads them from Kafka, validates them and commits offsets.
"""

from __future__ import annotations

import os
import sys
import time

from influxdb_client.client.write_api import SYNCHRONOUS

from sinks.lineprotocol import request_line
from sinks.runner import SinkRunner
from sinks.testing import BASE_NS, make_timing, produce, settings_for
from tokenpulse.testing.services import InfluxEndpoint, unique_name


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    env = os.environ
    server = InfluxEndpoint(env["TOKENPULSE_INFLUX_URL"], env["TOKENPULSE_INFLUX_TOKEN"],
                            env.get("TOKENPULSE_INFLUX_ORG", "tokenpulse"), "unused")  # fmt: skip
    bootstrap = env["TOKENPULSE_KAFKA_BOOTSTRAP"]
    events = [make_timing(started_at=BASE_NS + i * 1000, provider=f"p{i % 4}", ttft_ms=100 + i % 97) for i in range(n)]
    lines = [request_line(e) for e in events]

    direct = server.with_new_bucket("bench-direct")
    with direct.client() as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        t0 = time.perf_counter()
        for i in range(0, n, 10_000):
            api.write(direct.bucket, direct.org, "\n".join(lines[i : i + 10_000]).encode())
        direct_s = time.perf_counter() - t0

    sink_bucket = server.with_new_bucket("bench-sink")
    settings = settings_for(bootstrap, sink_bucket, unique_name("bench"))
    produce(bootstrap, settings.topics.request_timings, events)  # the whole backlog waits in Kafka first
    runner = SinkRunner(settings, sinks=("llm_request",))
    runner.start()
    sink = runner.kafka_sinks[0]
    # Time from the first acknowledged batch to the last (group join is not throughput).
    while sink.stats.written == 0:
        time.sleep(0.005)
    first, t0 = sink.stats.written, time.perf_counter()
    deadline = t0 + 300
    while sink.stats.written < n and time.perf_counter() < deadline:
        time.sleep(0.005)
    sink_s = time.perf_counter() - t0
    runner.stop()
    written = sink.stats.written - first
    direct_rate, sink_rate = n / direct_s, written / sink_s
    print(f"points: {n}")
    print(f"direct influxdb-client (10k-line batches): {direct_rate:,.0f} points/s")
    print(f"sink (Kafka getmany -> validate -> line protocol -> write -> commit): {sink_rate:,.0f} points/s")
    print(f"ratio sink/direct: {sink_rate / direct_rate:.2f}")


if __name__ == "__main__":
    main()

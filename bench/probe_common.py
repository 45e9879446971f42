"""Shared helpers of the probe benchmarks (the simulator runs in its own process)."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenpulse.producers.probe import EventLoop, EventSink, run_async, run_workload_async
from tokenpulse.producers.publisher import KafkaPublisher, PublisherConfig
from tokenpulse.producers.timing import percentile
from tokenpulse.producers.workload import parse_workload
from tokenpulse.schemas import RequestTiming


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


class TeeSink(ListSink):
    """Keeps the events for the figures and also publishes them (to Kafka)."""

    def __init__(self, other: EventSink) -> None:
        super().__init__()
        self.other = other

    def publish(self, event: RequestTiming) -> None:
        super().publish(event)
        self.other.publish(event)


def common_args(description: str, default_reps: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reps", type=int, default=default_reps, help="repetitions; figures are medians")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop of both sides")
    kafka_help = "also publish every event through KafkaPublisher to TOKENPULSE_KAFKA_BOOTSTRAP"
    parser.add_argument("--kafka", action="store_true", help=kafka_help)
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval while probing (default: leave CPython's 5 ms)",
    )
    return parser


def workload(base_url: str, requests: int, schedule: dict[str, Any], output_tokens: int, warmup: int = 4) -> Any:
    return parse_workload(
        {
            "name": "bench",
            "requests": requests,
            "schedule": schedule,
            "warmup_requests": warmup,
            "prompts": {"synthetic": {"count": 8, "input_tokens": 50, "output_tokens": output_tokens}},
            "endpoints": [{"name": "sim", "kind": "openai", "base_url": base_url, "model": "sim"}],
            "timeouts": {"connect_s": 5, "first_token_s": 30, "total_s": 60},
        }
    )


@contextlib.contextmanager
def kafka_publisher(enabled: bool) -> Iterator[KafkaPublisher | None]:
    """A real publisher to a fresh topic of the running stack, or ``None``."""
    if not enabled:
        yield None
        return
    bootstrap = os.environ.get("TOKENPULSE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit('--kafka needs a broker: eval "$(.venv/bin/tokenpulse stack env --home /tmp/tphome)"')
    with tempfile.TemporaryDirectory() as tmp:
        topic = f"bench-probe-{uuid.uuid4().hex[:8]}"
        publisher = KafkaPublisher(PublisherConfig(bootstrap=bootstrap, topic=topic, spool_path=Path(tmp) / "s.sqlite"))
        try:
            yield publisher
        finally:
            publisher.drain(30)
            stats = publisher.close()
            print(f"kafka: {stats.delivered} delivered, {stats.spooled} spooled to topic {topic}")


def probe(w: Any, loop: EventLoop = "uvloop", publisher: KafkaPublisher | None = None) -> list[RequestTiming]:
    sink = ListSink() if publisher is None else TeeSink(publisher)
    run_async(run_workload_async(w, sink, api_keys={}), loop)
    return sink.events


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"p50 {percentile(ordered, 50):.3f}  p95 {percentile(ordered, 95):.3f}  "
        f"p99 {percentile(ordered, 99):.3f}  max {ordered[-1]:.3f}"
    )


def pct(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


def median(values: list[float]) -> float:
    return statistics.median(values)

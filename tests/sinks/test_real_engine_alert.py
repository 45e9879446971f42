"""A real engine under load, end to end: probe -> Kafka -> faust worker -> sinks + alert engine -> webhook.

llama-server at concurrency 1 sets the baseline; at concurrency 4 its requests queue for its decode slots
and share 2 cores, TTFT rises, and a ``regression`` rule on the 5 s windows' TTFT p95 fires exactly once.
"""

from __future__ import annotations

import os
import statistics
import uuid
from pathlib import Path

import pytest

from tokenpulse.demo import WebhookReceiver
from tokenpulse.producers.probe import run_workload
from tokenpulse.producers.workload import Workload, parse_workload
from tokenpulse.sinks.notifiers import WebhookNotifier
from tokenpulse.sinks.rules import parse_rules
from tokenpulse.sinks.runner import SinkRunner
from tokenpulse.streams.cli import worker_argv
from tokenpulse.testing.services import InfluxEndpoint, LlmEndpoint
from tokenpulse.testing.sinks import settings_for, wait_until
from tokenpulse.testing.streams import WorkerProcess

pytestmark = [pytest.mark.real_engine, pytest.mark.integration]

WINDOW = "5s"
RULES = {
    "rules": [
        {
            "name": "llm-ttft-regression",
            "kind": "regression",
            "metric": "ttft_p95_ms",
            "worse_by_pct": 50,
            "baseline_period": "1h",
            "min_samples": 5,
            "min_baseline_windows": 3,
            "for_windows": 2,
            "clear_windows": 2,
            "cooldown": "1h",
            "severity": "warning",
            "match": {"window": WINDOW},
        }
    ]
}


def _workload(llm: LlmEndpoint, concurrency: int, duration_s: float, run: str) -> Workload:
    return parse_workload(
        {
            "name": "llm-load",
            "endpoints": [
                {
                    "name": "llama",
                    "kind": "openai",
                    "provider": "llama.cpp-local",
                    "base_url": llm.base_url,
                    "model": llm.model,
                    "region": "local",
                }
            ],
            "prompts": {"inline": [f"[{run}-{n}] Tell a short story about the number {n}." for n in range(64)]},
            "max_tokens": 16,
            "schedule": {"kind": "closed", "concurrency": concurrency},
            "duration_s": duration_s,
            "timeouts": {"connect_s": 5, "first_token_s": 60, "total_s": 120},
        }
    )


def test_concurrency_regression_fires_one_alert_end_to_end(
    llm_engine: LlmEndpoint, kafka_bootstrap: str, influx: InfluxEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, influx, topic_prefix).model_copy(update={"data_dir": tmp_path / "data"})
    env = dict(
        os.environ,
        TOKENPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TOKENPULSE_TOPIC_PREFIX=topic_prefix,
        TOKENPULSE_DATA_DIR=str(tmp_path / "worker"),
    )
    webhook = WebhookReceiver()
    url = webhook.start()
    worker = WorkerProcess(worker_argv(windows=(WINDOW,), grace="1s", idle_close_s=3.0), env, tmp_path / "worker.log")
    sinks = SinkRunner(settings, parse_rules(RULES), [WebhookNotifier(url)])
    run = uuid.uuid4().hex[:8]
    ttft: dict[int, list[float]] = {}
    try:
        worker.start()
        sinks.start()
        for concurrency, duration_s in ((1, 32.0), (4, 24.0)):
            summary = run_workload(_workload(llm_engine, concurrency, duration_s, run), settings, environ={})
            endpoint = summary.endpoints["llama"]
            assert endpoint.errors == 0, dict(endpoint.error_kinds)
            ttft[concurrency] = endpoint.ttft_ms
        engine = sinks.alert_engine
        assert engine is not None
        wait_until(lambda: any(a.state == "firing" for a in engine.alerts), 90, f"a firing alert ({worker.log_tail()})")
        wait_until(lambda: len(webhook.bodies) >= 1, 30, "the webhook's notification")
        wait_until(lambda: engine.windows_seen >= 10, 30, "the last windows")
    finally:
        sinks.stop()
        worker.stop()
        webhook.stop()

    print(
        f"\nmedian TTFT: concurrency 1 {statistics.median(ttft[1]):.1f} ms, concurrency 4 "
        f"{statistics.median(ttft[4]):.1f} ms; alerts {[(a.state, a.value, a.baseline) for a in engine.alerts]}"
    )
    assert statistics.median(ttft[4]) > statistics.median(ttft[1])
    assert [a.state for a in engine.alerts] == ["firing"]
    assert webhook.states() == ["firing"]
    firing = webhook.bodies[0]
    assert firing["rule"] == "llm-ttft-regression" and firing["provider"] == "llama.cpp-local"

"""Rebuilding the regression rules' baselines from InfluxDB after a restart.

A ``RuleEngine`` keeps its baselines (the trailing median of each metric) in memory, so a restarted alert
engine would need a whole ``baseline_period`` of fresh windows before a regression rule could fire again.
``seed_from_influx`` reads the ``llm_window`` points of that period back (``queries/baseline_windows.flux``)
and hands them to ``RuleEngine.seed_samples``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tokenpulse.schemas import datetime_to_ns, ns_to_datetime
from tokenpulse.sinks.flux import render
from tokenpulse.sinks.rules import BaselineSample, RuleEngine

log = logging.getLogger(__name__)

_TAGS = ("provider", "model", "workload", "window")
_NOT_METRICS = frozenset({"result", "table", "_time", "region", *_TAGS})


def read_baseline_samples(query_api: Any, bucket: str, start_ns: int, stop_ns: int) -> list[BaselineSample]:
    """``llm_window`` points with ``start_ns <= window_end < stop_ns`` as baseline samples."""
    query = render(
        "baseline_windows", {"bucket": bucket, "start": ns_to_datetime(start_ns), "stop": ns_to_datetime(stop_ns)}
    )
    samples: list[BaselineSample] = []
    for table in query_api.query(query):
        for record in table.records:
            values: dict[str, Any] = record.values
            if any(not isinstance(values.get(tag), str) for tag in _TAGS):
                continue  # a point written without one of the key tags: not a window of ours
            when = values["_time"]
            window_end = datetime_to_ns(when) if isinstance(when, datetime) else int(when)
            metrics = {
                name: float(value)
                for name, value in values.items()
                if name not in _NOT_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
            }
            samples.append(
                BaselineSample(
                    values["provider"],
                    values["model"],
                    values["workload"],
                    values["window"],
                    window_end,
                    int(metrics.get("count", 0)),
                    metrics,
                    values["region"] if isinstance(values.get("region"), str) else "",
                )
            )
    return samples


def seed_from_influx(engine: RuleEngine, client: Any, bucket: str, *, time_ns: Callable[[], int] = time.time_ns) -> int:
    """Seed ``engine`` with the ``llm_window`` points of its longest baseline period; returns the number of
    values taken (0 when no rule needs a baseline)."""
    period_ns = engine.baseline_period_ns()
    if period_ns is None:
        return 0
    now = time_ns()
    samples = read_baseline_samples(client.query_api(), bucket, now - period_ns, now + 1)
    taken = engine.seed_samples(samples)
    log.info("seeded regression baselines with %d values from %d llm_window points", taken, len(samples))
    return taken

"""Every llm_window panel of the Grafana dashboard names a field the sink writes: each query returns data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from influxdb_client.client.write_api import SYNCHRONOUS

from tokenpulse.schemas import Quantiles
from tokenpulse.sinks.lineprotocol import window_line
from tokenpulse.testing.sinks import MINUTE_NS, make_window

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).parents[2] / "grafana" / "dashboards" / "tokenpulse.json"


def test_every_window_panel_query_returns_data(influx) -> None:
    now = time.time_ns() // MINUTE_NS * MINUTE_NS
    window = make_window(
        window_end=now - MINUTE_NS,
        ttfa_ms=Quantiles(p50=600.0, p95=900.0, p99=950.0, max=990.0),
        cached_prompt_tokens=3000,
        reasoning_tokens=1200,
        cache_hit_ratio=0.5,
        reasoning_share=0.2,
    )
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if "llm_window" in json.dumps(p)]
    assert {"p95 TTFA (first answer token) per provider/model", "prompt cache hit ratio"} <= {
        p["title"] for p in panels
    }
    with influx.client() as client:
        client.write_api(write_options=SYNCHRONOUS).write(influx.bucket, influx.org, [window_line(window)])
        for panel in panels:
            query = (
                panel["targets"][0]["query"]
                .replace("${bucket}", influx.bucket)
                .replace("v.timeRangeStart", "-1h")
                .replace("v.timeRangeStop", "now()")
                .replace("v.windowPeriod", "1m")
            )
            values = [r.get_value() for t in client.query_api().query(query) for r in t.records]
            assert values, f"panel {panel['title']!r} found no data"

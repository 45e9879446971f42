"""``trends`` over 30 days of seeded llm_request data returns the per-day p95 that numpy computes."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest

from tokenpulse.sinks.lineprotocol import request_line
from tokenpulse.sinks.trends import plot_report, query_trends, report_csv, report_json
from tokenpulse.sinks.writer import InfluxWriter
from tokenpulse.testing.sinks import make_timing

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * 10**9


def test_trends_daily_p95_matches_numpy(influx, tmp_path) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight_ns = int(today.timestamp()) * 10**9
    now_ns = midnight_ns + 23 * 3600 * 10**9
    rng = np.random.default_rng(7)
    events = []
    for day in range(30):
        for provider, scale in (("fast-cloud", 200.0), ("slow-cloud", 600.0)):
            for i in range(25):
                error = rng.random() < 0.1
                started_at = midnight_ns - day * DAY_NS + 3600 * 10**9 + i * 60 * 10**9 + int(rng.integers(0, 10**9))
                ttft = float(round(rng.gamma(4.0, scale / 4.0), 3))
                events.append(
                    make_timing(
                        provider=provider,
                        model="m1",
                        workload="chat" if i % 5 else "batch",
                        started_at=started_at,
                        status="error" if error else "ok",
                        error_kind="http_5xx" if error else None,
                        ttft_ms=None if error else ttft,
                        e2e_ms=3.0 if error else ttft + 1000.0,  # a 429 answers fast: it must not pull p50 down
                        tpot_ms=None if error else 10.0,
                        cost_usd=0.001,
                        prompt_tokens=100,
                        completion_tokens=100,
                    )
                )
    writer = InfluxWriter(influx.url, influx.token, influx.org, influx.bucket)
    try:
        result = writer.write([request_line(e) for e in events])
    finally:
        writer.close()
    assert result.written == len(events) and not result.rejected

    with influx.client() as client:
        report = query_trends(client, influx.bucket, since="30d", now_ns=now_ns)
        chat_only = query_trends(
            client,
            influx.bucket,
            since="30d",
            workload="chat",
            provider="slow-cloud",
            now_ns=now_ns,
            requests_per_day=10_000,
        )

    expected: dict[tuple, list[float]] = defaultdict(list)
    expected_e2e: dict[tuple, list[float]] = defaultdict(list)
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        key = (datetime.fromtimestamp(e.started_at / 1e9, UTC).date(), e.provider)
        counts[key][0] += 1
        counts[key][1] += e.status == "error"
        if e.ttft_ms is not None:
            expected[key].append(e.ttft_ms)
        if e.status == "ok":
            expected_e2e[key].append(e.e2e_ms)
    assert len(report.rows) == 60
    for row in report.rows:
        values = np.array(expected[(row.day, row.provider)])
        assert row.ttft_p95_ms == float(np.percentile(values, 95, method="inverted_cdf"))
        assert row.ttft_p50_ms == float(np.percentile(values, 50, method="inverted_cdf"))
        e2e = np.array(expected_e2e[(row.day, row.provider)])
        assert row.e2e_p50_ms == float(np.percentile(e2e, 50, method="inverted_cdf"))
        assert row.e2e_p95_ms == float(np.percentile(e2e, 95, method="inverted_cdf"))
        assert (row.requests, row.errors) == tuple(counts[(row.day, row.provider)])
        assert row.cost_per_1k_tokens == pytest.approx(0.001 * row.requests / (200 * row.requests) * 1000)

    fast, slow = report.comparison
    assert (fast.provider, slow.provider) == ("fast-cloud", "slow-cloud")
    assert fast.ttft_p95_ms is not None and slow.ttft_p95_ms is not None and fast.ttft_p95_ms < slow.ttft_p95_ms
    fast_times = [e.started_at for e in events if e.provider == "fast-cloud"]
    observed_h = (max(fast_times) - min(fast_times)) / 3.6e12
    assert fast.observed_hours == pytest.approx(observed_h, abs=1e-6)
    assert fast.projected_30d_cost_usd == pytest.approx(0.001 * len(fast_times) / observed_h * 720, rel=1e-6)
    all_ok_e2e = [e.e2e_ms for e in events if e.provider == "fast-cloud" and e.status == "ok"]
    assert fast.e2e_p95_ms == float(np.percentile(all_ok_e2e, 95, method="inverted_cdf"))

    assert {r.provider for r in chat_only.rows} == {"slow-cloud"}
    assert chat_only.comparison[0].projected_30d_cost_at_volume_usd == pytest.approx(0.001 * 10_000 * 30)
    assert sum(r.requests for r in chat_only.rows) == 30 * 20

    assert report_csv(report).count("\n") == 61
    assert len(json.loads(report_json(report))["daily"]) == 60
    png = plot_report(report, tmp_path / "trends.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

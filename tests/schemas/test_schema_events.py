"""The event schemas: validation rules, JSON round-trip, JSON Schema export."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tokenpulse.schemas import Alert, Quantiles, RequestTiming, SchemaError, WindowStats, decode, encode
from tokenpulse.schemas.export import export_json_schemas

T0 = 1_780_000_000_123_456_789


def timing(**overrides: Any) -> RequestTiming:
    fields: dict[str, Any] = dict(
        probe_id="p",
        started_at=T0,
        provider="groq",
        model="m",
        endpoint="https://api.groq.com/openai/v1/chat/completions",
        workload="w",
        prompt_id="q",
        status="ok",
        ttft_ms=12.5,
        e2e_ms=100.0,
    )
    fields.update(overrides)
    return RequestTiming(**fields)


def test_round_trip_keeps_nanoseconds() -> None:
    event = timing(tags={"team": "a"}, completion_tokens=5)
    raw = encode(event)
    assert b'"started_at":"2026-05-28T' in raw and b".123456789Z" in raw
    assert decode(RequestTiming, raw) == event


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ttft_ms": 200.0}, "must not exceed e2e_ms"),
        ({"e2e_ms": -1.0}, "greater than or equal"),
        ({"e2e_ms": math.nan}, "finite"),
        ({"completion_tokens": -1}, "greater than or equal"),
        ({"status": "error"}, "needs an error_kind"),
        ({"error_kind": "timeout"}, "must not carry an error_kind"),
        ({"error_kind": "teapot", "status": "error"}, "error_kind"),
        ({"endpoint": "https://user:pw@host/v1"}, "no user info"),
        ({"endpoint": "https://host/v1?key=sk"}, "no user info"),
        ({"started_at": "2026-01-01T00:00:00"}, "RFC 3339 with a zone"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_invalid_request_timings_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        timing(**overrides)


def test_decode_errors_are_one_line_schema_errors() -> None:
    with pytest.raises(SchemaError, match="not JSON"):
        decode(RequestTiming, b"{")
    with pytest.raises(SchemaError, match="unknown schema_version"):
        decode(RequestTiming, b'{"schema_version": 99}')
    raw = json.loads(encode(timing()))
    raw["ttft_ms"] = -5
    with pytest.raises(SchemaError, match="ttft_ms"):
        decode(RequestTiming, json.dumps(raw))


def test_timestamps_accept_offsets_and_aware_datetimes() -> None:
    a = timing(started_at="2026-01-01T01:00:00.5+01:00")
    b = timing(started_at="2026-01-01T00:00:00.500000000Z")
    assert a.started_at == b.started_at


def test_window_stats_and_alert_rules() -> None:
    q = Quantiles(p50=1, p95=2, p99=3, max=4)
    stats = WindowStats(
        provider="p",
        model="m",
        workload="w",
        window="1m",
        window_start=T0,
        window_end=T0 + 60 * 10**9,
        count=3,
        error_count=1,
        error_rate=1 / 3,
        ttft_ms=q,
    )
    assert decode(WindowStats, encode(stats)) == stats
    assert stats.kafka_key() == b"p/m/w/1m"
    with pytest.raises(ValidationError, match="ordered"):
        Quantiles(p50=5, p95=2, p99=3, max=4)
    with pytest.raises(ValidationError, match="error_count"):
        WindowStats(
            provider="p",
            model="m",
            workload="w",
            window="1m",
            window_start=T0,
            window_end=T0 + 1,
            count=1,
            error_count=2,
            error_rate=1.0,
        )
    alert = Alert(
        alert_id="a",
        rule="ttft",
        severity="critical",
        state="firing",
        provider="p",
        model="m",
        workload="w",
        metric="ttft_p95_ms",
        value=300.0,
        baseline=100.0,
        threshold=2.0,
        window_end=T0,
        message="TTFT p95 tripled",
    )
    assert decode(Alert, encode(alert)) == alert


def test_json_schema_export(tmp_path: Path) -> None:
    paths = export_json_schemas(tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["alert.v1.schema.json", "request-timing.v1.schema.json", "window-stats.v1.schema.json"]
    schema = json.loads((tmp_path / "out" / "request-timing.v1.schema.json").read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["properties"]["started_at"]["format"] == "date-time"
    assert {"event_id", "ttft_ms", "error_kind", "token_count_source"} <= set(schema["properties"])


NEW_REQUEST_FIELDS = (
    "ttfa_ms",
    "reasoning_ms",
    "cached_prompt_tokens",
    "reasoning_tokens",
    "tool_calls",
    "price_cached_in_per_mtok",
    "price_reasoning_out_per_mtok",
)


def test_an_event_written_before_the_reasoning_fields_still_decodes() -> None:
    document = json.loads(encode(timing(prompt_tokens=10, completion_tokens=5)))
    for name in NEW_REQUEST_FIELDS:
        del document[name]
    old = decode(RequestTiming, json.dumps(document))
    assert old.schema_version == 1 and old.completion_tokens == 5
    assert (old.ttfa_ms, old.reasoning_ms, old.cached_prompt_tokens, old.reasoning_tokens, old.tool_calls) == (
        None,
        None,
        0,
        0,
        0,
    )
    window = json.loads(encode(WindowStats(**_window_fields())))
    for name in ("ttfa_ms", "cached_prompt_tokens", "reasoning_tokens", "cache_hit_ratio", "reasoning_share"):
        del window[name]
    assert decode(WindowStats, json.dumps(window)).ttfa_ms is None


def _window_fields() -> dict[str, Any]:
    return dict(
        provider="p",
        model="m",
        workload="w",
        window="1m",
        window_start=T0,
        window_end=T0 + 60 * 10**9,
        count=2,
        error_count=0,
        error_rate=0.0,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ttft_ms": 50.0, "ttfa_ms": 40.0}, "ttfa_ms"),
        ({"ttft_ms": None, "ttfa_ms": 40.0}, "ttfa_ms"),
        ({"ttfa_ms": 150.0}, "ttfa_ms"),
        ({"prompt_tokens": 5, "cached_prompt_tokens": 6}, "cached_prompt_tokens"),
        ({"completion_tokens": 5, "reasoning_tokens": 6}, "reasoning_tokens"),
    ],
)
def test_inconsistent_reasoning_and_cache_figures_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        timing(**overrides)

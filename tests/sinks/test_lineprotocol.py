from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tokenpulse.sinks.lineprotocol import (
    alert_line,
    build_line,
    escape_key,
    request_line,
    request_line_generic,
    window_line,
)
from tokenpulse.testing.sinks import BASE_NS, make_alert, make_timing, make_window


def test_request_line_has_contract_tags_fields_and_time() -> None:
    event = make_timing(ttft_ms=250.0, prompt_tokens=120)
    line = request_line(event)
    head, fields, ts = line.split(" ")
    assert head == "llm_request,model=sim-small,provider=simulated,region=local,status=ok,workload=chat"
    assert ts == str(BASE_NS)
    assert "ttft_ms=250.0" in fields.split(",")
    assert "prompt_tokens=120i" in fields.split(",")
    assert f'event_id="{event.event_id}"' in fields.split(",")


def test_error_request_has_error_kind_tag_and_omits_null_fields() -> None:
    event = make_timing(status="error", error_kind="http_5xx", ttft_ms=None, tpot_ms=None, decode_tps=None)
    line = request_line(event)
    assert ",error_kind=http_5xx," in line
    assert "ttft_ms" not in line and "tpot_ms" not in line and "decode_tps" not in line
    assert "e2e_ms=1250.0" in line


def test_region_none_is_omitted() -> None:
    assert "region" not in request_line(make_timing(region=None))


def test_integer_valued_floats_stay_floats() -> None:
    line = request_line(make_timing(ttft_ms=100, e2e_ms=200, cost_usd=0))
    assert "ttft_ms=100.0" in line and "e2e_ms=200.0" in line and "cost_usd=0.0" in line


def test_replayed_event_gives_identical_line() -> None:
    event = make_timing()
    assert request_line(event) == request_line(event.model_copy())


def test_window_line_fields_and_time() -> None:
    stats = make_window(ttft_p95=800.0, window_end=BASE_NS + 60_000_000_000)
    line = window_line(stats)
    assert line.startswith("llm_window,model=sim-small,provider=simulated,region=local,window=1m,workload=chat ")
    assert line.endswith(f" {BASE_NS + 60_000_000_000}")
    for part in ("count=60i", "ttft_p95_ms=800.0", "ttft_p50_ms=480.0", "e2e_p95_ms=1500.0", "tpot_p95_ms=14.0"):
        assert part in line


def test_window_without_latencies_keeps_counts() -> None:
    stats = make_window(ttft_ms=None, e2e_ms=None, tpot_ms=None, cost_per_1k_tokens=None, decode_tps_p50=None)
    line = window_line(stats)
    assert "ttft" not in line and "e2e" not in line and "count=60i" in line


def test_alert_line_escapes_message() -> None:
    alert = make_alert(message='ttft "p95" 900\\ms, up', rule="ttft p95,high")
    line = alert_line(alert)
    assert line.startswith(r"llm_alert,model=sim-small,provider=simulated,rule=ttft\ p95\,high,")
    assert r'message="ttft \"p95\" 900\\ms, up"' in line
    assert "baseline" not in line


def test_escape_key_newline_and_trailing_backslash() -> None:
    assert escape_key("a b,c=d\ne") == r"a\ b\,c\=d\ e"
    assert escape_key("x\\") == "x\\ "


def test_point_without_fields_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        build_line("m", {"a": "b"}, {"x": None}, 1)


_name = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30).filter(
    lambda s: s.strip() == s and s.strip() != ""
)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            current += ch
            escaped = True
        elif ch == sep:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


@given(provider=_name, model=_name, workload=_name)
@example(provider="p", model="m\\,x", workload="\\\n0")  # a backslash before an escaped character
def test_any_names_give_three_sections(provider: str, model: str, workload: str) -> None:
    line = request_line(make_timing(provider=provider, model=model, workload=workload))
    assert "\n" not in line
    sections = _split_unescaped(line, " ")
    assert len(sections) == 3
    assert sections[2] == str(BASE_NS)


_maybe_ms = st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False))


@given(
    provider=_name,
    region=st.one_of(st.none(), st.just(""), _name),
    error=st.booleans(),
    ttft=_maybe_ms,
    tpot=_maybe_ms,
    itl=_maybe_ms,
    tps=_maybe_ms,
    tokens=st.integers(0, 10**9),
    reasoning=st.one_of(st.none(), st.floats(0, 1e5, allow_nan=False)),
    details=st.tuples(st.integers(0, 120), st.integers(0, 10**9), st.integers(0, 64)),
)
def test_fast_request_line_equals_the_generic_builder(
    provider: str,
    region: str | None,
    error: bool,
    ttft: float | None,
    tpot: float | None,
    itl: float | None,
    tps: float | None,
    tokens: int,
    reasoning: float | None,
    details: tuple[int, int, int],
) -> None:
    cached, thought, tool_calls = details
    event = make_timing(
        ttfa_ms=None if ttft is None or reasoning is None else ttft + reasoning,
        reasoning_ms=reasoning,
        cached_prompt_tokens=cached,
        reasoning_tokens=min(thought, tokens),
        tool_calls=tool_calls,
        provider=provider,
        region=region,
        status="error" if error else "ok",
        error_kind="timeout" if error else None,
        ttft_ms=ttft,
        e2e_ms=2e6,
        tpot_ms=tpot,
        itl_p95_ms=itl,
        decode_tps=tps,
        completion_tokens=tokens,
    )
    assert request_line(event) == request_line_generic(event)

"""Pure InfluxDB line-protocol building for the three measurements of DESIGN.md.

One event gives exactly one line. Series (measurement + tags) and timestamp depend only on the event, so a
replayed event or a re-emitted window overwrites its own point instead of adding one. Optional values that
are ``None`` are left out (InfluxDB has no null); empty tag values are left out too, because InfluxDB
rejects them. Floats are always written as floats and counts as integers, so a field never changes type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tokenpulse.schemas import Alert, RequestTiming, WindowStats

MEASUREMENT_REQUEST = "llm_request"
MEASUREMENT_WINDOW = "llm_window"
MEASUREMENT_ALERT = "llm_alert"

FieldValue = float | int | str | bool | None

# Line protocol has no escape for newlines in keys and tags: they become (escaped) spaces.
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ", "\r": r"\ ", "\t": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ ", "\t": r"\ "})


_BACKSLASH_BEFORE_SPECIAL = re.compile(r"\\(?=[,= \n\r\t])")


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (commas, equals signs and spaces; newlines become spaces).

    InfluxDB's parser takes a backslash as escaping whatever byte follows it, so a backslash of the text
    just before a character that gets escaped is doubled (else it would pair with the escape's backslash
    and leave the separator bare).
    """
    if "\\" in text:
        text = _BACKSLASH_BEFORE_SPECIAL.sub(r"\\\\", text)
    escaped = text.translate(_KEY_ESCAPES)
    # A trailing backslash would escape the separator that follows it.
    return escaped + " " if escaped.endswith("\\") else escaped


def escape_string_field(text: str) -> str:
    """A double-quoted string field value (backslashes and double quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field(value: float | int | str | bool) -> str:
    """One field value in line-protocol syntax: ``1.5``, ``3i``, ``"text"``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return escape_string_field(value)


def build_line(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue], time_ns: int) -> str:
    """One line; tags are sorted (InfluxDB's canonical order), ``None`` tags and fields are skipped.

    Raises ``ValueError`` when no field is left, because InfluxDB rejects a point without fields.
    """
    head = measurement.translate(_MEASUREMENT_ESCAPES)
    tag_part = "".join(f",{escape_key(key)}={escape_key(value)}" for key, value in sorted(tags.items()) if value)
    field_part = ",".join(
        f"{escape_key(key)}={format_field(value)}" for key, value in fields.items() if value is not None
    )
    if not field_part:
        raise ValueError(f"a {measurement} point needs at least one field")
    return f"{head}{tag_part} {field_part} {time_ns}"


def _f(value: float | None) -> float | None:
    return None if value is None else float(value)


def request_line_generic(event: RequestTiming) -> str:
    """``request_line`` through the generic ``build_line``: the reference the fast path is tested against."""
    tags = {
        "provider": event.provider,
        "model": event.model,
        "workload": event.workload,
        "region": event.region,
        "status": event.status,
        "error_kind": event.error_kind,
    }
    fields: dict[str, FieldValue] = {
        "ttft_ms": _f(event.ttft_ms),
        "ttfa_ms": _f(event.ttfa_ms),
        "reasoning_ms": _f(event.reasoning_ms),
        "e2e_ms": float(event.e2e_ms),
        "tpot_ms": _f(event.tpot_ms),
        "itl_p95_ms": _f(event.itl_p95_ms),
        "decode_tps": _f(event.decode_tps),
        "prompt_tokens": int(event.prompt_tokens),
        "cached_prompt_tokens": int(event.cached_prompt_tokens),
        "completion_tokens": int(event.completion_tokens),
        "reasoning_tokens": int(event.reasoning_tokens),
        "tool_calls": int(event.tool_calls),
        "cost_usd": float(event.cost_usd),
        "server_prefill_ms": _f(event.server_prefill_ms),
        "server_decode_ms": _f(event.server_decode_ms),
        "server_cached_tokens": None if event.server_cached_tokens is None else int(event.server_cached_tokens),
        "event_id": str(event.event_id),
    }
    return build_line(MEASUREMENT_REQUEST, tags, fields, event.started_at)


_REQUEST_HEADS: dict[tuple[str, str, str, str | None, str, str | None], str] = {}
_HEAD_CACHE_LIMIT = 100_000


def _request_head(event: RequestTiming) -> str:
    key = (event.provider, event.model, event.workload, event.region, event.status, event.error_kind)
    head = _REQUEST_HEADS.get(key)
    if head is None:
        tags = {
            "provider": key[0],
            "model": key[1],
            "workload": key[2],
            "region": key[3],
            "status": key[4],
            "error_kind": key[5],
        }
        head = MEASUREMENT_REQUEST + "".join(
            f",{escape_key(name)}={escape_key(value)}" for name, value in sorted(tags.items()) if value
        )
        if len(_REQUEST_HEADS) >= _HEAD_CACHE_LIMIT:
            _REQUEST_HEADS.clear()
        _REQUEST_HEADS[key] = head
    return head


def request_line(event: RequestTiming) -> str:
    """``llm_request`` at ``started_at``; tags provider, model, workload, region, status, error_kind.

    The same text as ``build_line`` gives (a property test holds the two together), built without its
    generic per-field work: the sink writes every request, so this runs once per event. The series part
    is cached per tag combination, of which a deployment has few.
    """
    ttft, tpot, itl, tps = event.ttft_ms, event.tpot_ms, event.itl_p95_ms, event.decode_tps
    fields = f"e2e_ms={float(event.e2e_ms)!r}"
    if event.reasoning_ms is not None:
        fields = f"reasoning_ms={float(event.reasoning_ms)!r},{fields}"
    if event.ttfa_ms is not None:
        fields = f"ttfa_ms={float(event.ttfa_ms)!r},{fields}"
    if ttft is not None:
        fields = f"ttft_ms={float(ttft)!r},{fields}"
    if tpot is not None:
        fields += f",tpot_ms={float(tpot)!r}"
    if itl is not None:
        fields += f",itl_p95_ms={float(itl)!r}"
    if tps is not None:
        fields += f",decode_tps={float(tps)!r}"
    server = ""  # the server's own timings, where it reports them (llama.cpp)
    if event.server_prefill_ms is not None:
        server += f",server_prefill_ms={float(event.server_prefill_ms)!r}"
    if event.server_decode_ms is not None:
        server += f",server_decode_ms={float(event.server_decode_ms)!r}"
    if event.server_cached_tokens is not None:
        server += f",server_cached_tokens={int(event.server_cached_tokens)}i"
    # A UUID's text is hex digits and dashes only: nothing to escape inside the quotes.
    return (
        f"{_request_head(event)} {fields},prompt_tokens={int(event.prompt_tokens)}i,"
        f"cached_prompt_tokens={int(event.cached_prompt_tokens)}i,"
        f"completion_tokens={int(event.completion_tokens)}i,reasoning_tokens={int(event.reasoning_tokens)}i,"
        f"tool_calls={int(event.tool_calls)}i,cost_usd={float(event.cost_usd)!r}{server},"
        f'event_id="{event.event_id}" {event.started_at}'
    )


def window_line(stats: WindowStats) -> str:
    """``llm_window`` at ``window_end``; tags provider, model, workload, region, window."""
    tags = {
        "provider": stats.provider,
        "model": stats.model,
        "workload": stats.workload,
        "region": stats.region,
        "window": stats.window,
    }
    ttft, ttfa, e2e, tpot = stats.ttft_ms, stats.ttfa_ms, stats.e2e_ms, stats.tpot_ms
    fields: dict[str, FieldValue] = {
        "count": int(stats.count),
        "error_rate": float(stats.error_rate),
        "ttft_p50_ms": None if ttft is None else float(ttft.p50),
        "ttft_p95_ms": None if ttft is None else float(ttft.p95),
        "ttft_p99_ms": None if ttft is None else float(ttft.p99),
        "ttfa_p50_ms": None if ttfa is None else float(ttfa.p50),
        "ttfa_p95_ms": None if ttfa is None else float(ttfa.p95),
        "ttfa_p99_ms": None if ttfa is None else float(ttfa.p99),
        "e2e_p95_ms": None if e2e is None else float(e2e.p95),
        "tpot_p95_ms": None if tpot is None else float(tpot.p95),
        "decode_tps_p50": _f(stats.decode_tps_p50),
        "prompt_tokens": int(stats.prompt_tokens),
        "cached_prompt_tokens": int(stats.cached_prompt_tokens),
        "completion_tokens": int(stats.completion_tokens),
        "reasoning_tokens": int(stats.reasoning_tokens),
        "cache_hit_ratio": _f(stats.cache_hit_ratio),
        "reasoning_share": _f(stats.reasoning_share),
        "cost_usd": float(stats.cost_usd),
        "cost_per_1k_tokens": _f(stats.cost_per_1k_tokens),
        "projected_30d_cost_usd": float(stats.projected_30d_cost_usd),
        "server_prefill_p95_ms": _f(stats.server_prefill_ms_p95),
        "server_decode_p95_ms": _f(stats.server_decode_ms_p95),
        "server_cached_tokens_p95": _f(stats.server_cached_tokens_p95),
    }
    return build_line(MEASUREMENT_WINDOW, tags, fields, stats.window_end)


def alert_line(alert: Alert) -> str:
    """``llm_alert`` at ``window_end``; tags rule, provider, model, workload, region, window, state, severity
    (region and window only when the alert has them)."""
    tags = {
        "rule": alert.rule,
        "provider": alert.provider,
        "model": alert.model,
        "workload": alert.workload,
        "region": alert.region,
        "window": alert.window,
        "state": alert.state,
        "severity": alert.severity,
    }
    fields: dict[str, FieldValue] = {
        "value": _f(alert.value),
        "baseline": _f(alert.baseline),
        "threshold": float(alert.threshold),
        "message": alert.message,
    }
    return build_line(MEASUREMENT_ALERT, tags, fields, alert.window_end)

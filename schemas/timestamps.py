"""UTC timestamps with nanosecond precision.

Python's ``datetime`` stops at microseconds, but probes measure in nanoseconds and InfluxDB stores
nanoseconds, so every event timestamp is an ``int`` of nanoseconds since the Unix epoch in Python and an
RFC 3339 string with nine fractional digits and a ``Z`` in JSON. Input may be that string (any number of
fractional digits, ``Z`` or a ``+00:00``-style offset), an aware ``datetime`` or an ``int`` of epoch ns.
Naive datetimes and strings without an offset are rejected: a timestamp of unknown zone is a bug.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

NANOS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|z|[+-]\d{2}:\d{2})$"
)


def datetime_to_ns(value: datetime) -> int:
    """Epoch nanoseconds of an aware datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware (UTC); got a naive datetime")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NANOS_PER_SECOND + delta.microseconds * 1_000


def ns_to_datetime(ns: int) -> datetime:
    """An aware UTC datetime (microsecond precision) for epoch nanoseconds."""
    return _EPOCH + timedelta(microseconds=ns // 1_000)


def parse_rfc3339_ns(text: str) -> int:
    """Epoch nanoseconds of an RFC 3339 timestamp that carries a zone offset."""
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"timestamp {text!r} is not RFC 3339 with a zone, e.g. '2026-11-21T10:00:00.123456789Z'")
    base = datetime.fromisoformat(match["base"].replace(" ", "T") + _offset(match["tz"]))
    frac = (match["frac"] or "").ljust(9, "0")
    return datetime_to_ns(base) + int(frac or "0")


def _offset(tz: str) -> str:
    return "+00:00" if tz in ("Z", "z") else tz


def format_rfc3339_ns(ns: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` for epoch nanoseconds."""
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    base = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def _coerce_ns(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string, an aware datetime or epoch nanoseconds")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("timestamp before 1970 is not accepted")
        return value
    if isinstance(value, datetime):
        return datetime_to_ns(value)
    if isinstance(value, str):
        return parse_rfc3339_ns(value)
    raise ValueError("timestamp must be an RFC 3339 string, an aware datetime or epoch nanoseconds")


UtcNanos = Annotated[
    int,
    BeforeValidator(_coerce_ns),
    PlainSerializer(format_rfc3339_ns, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""Epoch nanoseconds in Python, RFC 3339 UTC with nanoseconds in JSON."""

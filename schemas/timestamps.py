"""UTC timestamps with nanosecond precision.

Python's ``datetime`` stops at microseconds, but probes measure in nanoseconds and InfluxDB stores
nanoseconds, so every event timestamp is an ``int`` of nanoseconds since the Unix epoch in Python and an
RFC 3339 string with nine fractional digits and a ``Z`` in JSON. Input may be that string (any number of
fractional digits, ``Z`` or a ``+00:00``-style offset), an aware ``datetime`` or an ``int`` of epoch ns.
Naive datetimes and strings without an offset are rejected: a timestamp of unknown zone is a bug.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from tokenpulse.durations import NANOS_PER_SECOND

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
    canonical = _canonical_ns(text)
    return canonical if canonical is not None else _parse_general(text)


def _parse_general(text: str) -> int:
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"timestamp {text!r} is not RFC 3339 with a zone, e.g. '2026-11-21T10:00:00.123456789Z'")
    base = datetime.fromisoformat(match["base"].replace(" ", "T") + _offset(match["tz"]))
    frac = (match["frac"] or "").ljust(9, "0")
    return datetime_to_ns(base) + int(frac or "0")


@functools.lru_cache(maxsize=4096)
def _day_ns(day: str) -> int:
    return datetime_to_ns(datetime.fromisoformat(day + "T00:00:00+00:00"))


def _canonical_ns(text: str) -> int | None:
    """The hot path: ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` exactly as ``format_rfc3339_ns`` writes it, read by
    slicing (every event on a topic has two or three such timestamps); ``None`` sends any other text to
    the general parser, which gives the same answer more slowly."""
    if len(text) != 30 or text[29] != "Z" or text[10] != "T" or text[13] != ":" or text[16] != ":":
        return None
    if text[19] != "." or not text.isascii():
        return None
    clock, fraction = text[11:13] + text[14:16] + text[17:19], text[20:29]
    if not (clock.isdigit() and fraction.isdigit()):
        return None
    hour, minute, second = int(clock[0:2]), int(clock[2:4]), int(clock[4:6])
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        day_ns = _day_ns(text[:10])
    except ValueError:
        return None
    return day_ns + (hour * 3600 + minute * 60 + second) * NANOS_PER_SECOND + int(fraction)


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

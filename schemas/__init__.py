"""Pydantic models of every event that crosses a tokenpulse topic. Imports nothing else of ours."""

from tokenpulse.schemas.codec import SchemaError, decode, encode
from tokenpulse.schemas.deadletter import DeadLetter
from tokenpulse.schemas.events import (
    SCHEMA_VERSION,
    Alert,
    AlertState,
    ErrorKind,
    Quantiles,
    RequestTiming,
    Severity,
    Status,
    WindowStats,
)
from tokenpulse.schemas.timestamps import UtcNanos, datetime_to_ns, format_rfc3339_ns, ns_to_datetime, parse_rfc3339_ns

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AlertState",
    "DeadLetter",
    "ErrorKind",
    "Quantiles",
    "RequestTiming",
    "SchemaError",
    "Severity",
    "Status",
    "UtcNanos",
    "WindowStats",
    "datetime_to_ns",
    "decode",
    "encode",
    "format_rfc3339_ns",
    "ns_to_datetime",
    "parse_rfc3339_ns",
]

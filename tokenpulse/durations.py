"""The one duration grammar of tokenpulse: ``<number><unit>`` with unit ``ms``, ``s``, ``m``, ``h`` or ``d``.

Window specs, grace periods, rule periods, cooldowns, retention and ``trends --since`` all read durations
through this module, so a duration that one command accepts every other accepts too.
"""

from __future__ import annotations

import re

NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_UNIT = {
    "ms": 1_000_000,
    "s": NANOS_PER_SECOND,
    "m": 60 * NANOS_PER_SECOND,
    "h": 3_600 * NANOS_PER_SECOND,
    "d": 86_400 * NANOS_PER_SECOND,
}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")

__all__ = ["NANOS_PER_SECOND", "NANOS_PER_UNIT", "DurationError", "format_duration", "parse_duration_ns"]


class DurationError(ValueError):
    """A duration that cannot be read; the message shows the accepted form."""


def parse_duration_ns(text: str) -> int:
    """Nanoseconds of a duration such as ``500ms``, ``10s``, ``1m``, ``2h`` or ``7d``."""
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(f"{text!r} is not a duration like 500ms, 30s, 10m, 24h or 7d (<number><ms|s|m|h|d>)")
    return int(match[1]) * NANOS_PER_UNIT[match[2]]


def format_duration(ns: int) -> str:
    """The shortest ``<n><unit>`` label of a whole number of seconds (the ``WindowStats.window`` form)."""
    for unit in ("d", "h", "m", "s"):
        if ns % NANOS_PER_UNIT[unit] == 0:
            return f"{ns // NANOS_PER_UNIT[unit]}{unit}"
    raise DurationError(f"{ns} ns is not a whole number of seconds")

"""Logging of the long-running commands: text or JSON lines, with repeated messages rate-limited.

``configure_logging("json")`` writes one JSON object per line (``ts``, ``level``, ``logger``, ``message`` and
any ``extra`` fields), which log shippers (journald, Loki, Fluent Bit) take as they are. A message that
repeats (same logger, same format string) is written at most once per ``repeat_interval_s``; the next one
that is let through says how many were suppressed, so a broker outage or a dead provider cannot fill a disk.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Literal, TextIO

import orjson

LogFormat = Literal["text", "json"]

__all__ = ["JsonFormatter", "LogFormat", "RateLimitFilter", "configure_logging"]

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, extras."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class RateLimitFilter(logging.Filter):
    """Lets a (logger, format string) pair through at most once per ``interval_s``; counts the rest and
    adds ``suppressed`` (and a note in the message) to the next record let through."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
            if len(self._last) > 10_000:  # bounded even if messages are built with varying format strings
                self._last.clear()
        if suppressed:
            record.suppressed = suppressed
            record.msg = f"{record.msg} ({suppressed} more like this in the last {self.interval_s:g}s)"
        return True


def configure_logging(
    log_format: LogFormat = "text",
    level: int = logging.INFO,
    *,
    repeat_interval_s: float = 60.0,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) in ``log_format``, rate-limited; returns the
    handler (replacing any handler an earlier call installed)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimitFilter(repeat_interval_s))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_tokenpulse", False):
            root.removeHandler(old)
    handler._tokenpulse = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler

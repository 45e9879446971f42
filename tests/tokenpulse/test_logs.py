"""Structured, rate-limited logs of the long-running commands."""

from __future__ import annotations

import io
import json
import logging

from tokenpulse.logs import JsonFormatter, RateLimitFilter, configure_logging


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("tokenpulse.x", logging.WARNING, __file__, 1, msg, args, None)


def test_a_repeated_message_passes_once_per_interval_and_says_how_many_were_suppressed() -> None:
    now = [0.0]
    limiter = RateLimitFilter(60.0, clock=lambda: now[0])
    assert limiter.filter(record("endpoint %s refused", "a"))
    assert not limiter.filter(record("endpoint %s refused", "b"))  # same format string: same message
    assert not limiter.filter(record("endpoint %s refused", "c"))
    assert limiter.filter(record("another message"))
    now[0] = 61.0
    again = record("endpoint %s refused", "d")
    assert limiter.filter(again)
    assert again.suppressed == 2  # type: ignore[attr-defined]
    assert "2 more like this in the last 60s" in again.getMessage()


def test_json_lines_carry_level_logger_message_and_extras() -> None:
    stream = io.StringIO()
    handler = configure_logging("json", stream=stream)
    try:
        logging.getLogger("tokenpulse.test").info("published %d", 3, extra={"published": 3})
    finally:
        logging.getLogger().removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["level"] == "info" and line["logger"] == "tokenpulse.test" and line["message"] == "published 3"
    assert line["published"] == 3 and line["ts"].endswith("+00:00")
    assert isinstance(JsonFormatter().format(record("x")), str)

"""Error classification and Retry-After parsing."""

from __future__ import annotations

import httpx
import pytest

from tokenpulse.producers.errors import (
    ProbeFailure,
    failure_for_exception,
    failure_for_status,
    kind_for_status,
    redact,
)
from tokenpulse.retry import parse_retry_after


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "http_429"), (404, "http_4xx"), (500, "http_5xx"), (502, "http_5xx"), (302, "invalid_response")],
)
def test_kind_for_status(status: int, kind: str) -> None:
    assert kind_for_status(status) == kind


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("900", cap_s=300.0) == 300.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=lambda: 1445412480.0) == 10.0


def test_failure_for_status_reads_retry_after() -> None:
    failure = failure_for_status(429, httpx.Headers({"Retry-After": "2"}), "slow down")
    assert (failure.kind, failure.http_status, failure.retry_after_s) == ("http_429", 429, 2.0)
    assert "slow down" in failure.detail


def _req() -> httpx.Request:
    return httpx.Request("POST", "http://x/v1/chat/completions")


@pytest.mark.parametrize(
    ("exc", "streaming", "kind"),
    [
        (httpx.ConnectError("refused", request=_req()), False, "connect"),
        (httpx.ConnectTimeout("slow", request=_req()), False, "timeout"),
        (httpx.ReadTimeout("slow", request=_req()), True, "timeout"),
        (TimeoutError(), False, "timeout"),
        (httpx.RemoteProtocolError("incomplete chunked read", request=_req()), True, "stream_broken"),
        (httpx.ReadError("reset", request=_req()), True, "stream_broken"),
        (httpx.ReadError("reset", request=_req()), False, "connect"),
        (ValueError("weird"), True, "invalid_response"),
    ],
)
def test_failure_for_exception(exc: BaseException, streaming: bool, kind: str) -> None:
    assert failure_for_exception(exc, streaming=streaming).kind == kind


def test_redaction_covers_str_repr_and_detail() -> None:
    failure = ProbeFailure("http_4xx", "bad key sk-123", http_status=401).redacted(["sk-123", ""])
    assert "sk-123" not in str(failure) and "sk-123" not in repr(failure)
    assert redact("a sk-123 b", ["sk-123"]) == "a *** b"

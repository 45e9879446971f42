"""Classification of failed requests into the ``error_kind`` values of the ``RequestTiming`` contract."""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from tokenpulse.errors import TokenpulseError
from tokenpulse.retry import parse_retry_after
from tokenpulse.schemas import ErrorKind


class WorkloadError(TokenpulseError):
    """A workload file that cannot be run; the message names the field and the fix."""


class ProbeFailure(Exception):
    """One request failed; carries its ``error_kind`` and a short detail that never contains a key."""

    def __init__(
        self, kind: ErrorKind, detail: str, *, http_status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: ErrorKind = kind
        self.detail = detail
        self.http_status = http_status
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"

    def __repr__(self) -> str:
        return f"ProbeFailure({self.kind!r}, {self.detail!r}, http_status={self.http_status!r})"

    def redacted(self, secrets: Iterable[str]) -> ProbeFailure:
        """A copy whose detail has every secret replaced by ``***``."""
        return ProbeFailure(
            self.kind, redact(self.detail, secrets), http_status=self.http_status, retry_after_s=self.retry_after_s
        )


def kind_for_status(status: int) -> ErrorKind:
    """``http_429``, ``http_4xx`` or ``http_5xx`` for an HTTP error status."""
    if status == 429:
        return "http_429"
    if 400 <= status < 500:
        return "http_4xx"
    if status >= 500:
        return "http_5xx"
    return "invalid_response"  # a 1xx/3xx where a stream was expected


def failure_for_status(status: int, headers: httpx.Headers | None, body: str = "") -> ProbeFailure:
    """The failure for a non-2xx response (``Retry-After`` read for any status that carries it)."""
    retry_after = parse_retry_after(headers.get("retry-after")) if headers is not None else None
    detail = f"HTTP {status}" + (f": {body.strip()[:200]}" if body.strip() else "")
    return ProbeFailure(kind_for_status(status), detail, http_status=status, retry_after_s=retry_after)


def failure_for_exception(exc: BaseException, *, streaming: bool) -> ProbeFailure:
    """Map a transport exception to a failure; ``streaming`` says whether the response had started."""
    if isinstance(exc, ProbeFailure):
        return exc
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        phase = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        return ProbeFailure("timeout", f"{phase} timeout ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return ProbeFailure("connect", f"cannot connect: {_one_line(exc)}")
    if isinstance(exc, httpx.TransportError):
        if streaming:
            return ProbeFailure("stream_broken", f"stream cut: {type(exc).__name__}: {_one_line(exc)}")
        return ProbeFailure("connect", f"{type(exc).__name__}: {_one_line(exc)}")
    return ProbeFailure("invalid_response", f"{type(exc).__name__}: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text

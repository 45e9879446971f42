"""Writing line-protocol batches to InfluxDB with our own retry loop.

influxdb-client's batching mode drops a batch once its retries are spent, so the sinks use its synchronous
API and decide themselves: transient failures (connection errors, timeouts, 5xx, 429, and 401/403/404,
which an operator can fix while we wait) are retried forever with exponential backoff and jitter, honouring
``Retry-After``, until the caller's stop event is set. A 400/422 answer means some lines are bad (a parse
error or a field-type conflict, possibly after a partial write): the batch is split in halves until every
rejected line is isolated; since points are idempotent, re-writing the accepted ones is harmless. Only the
isolated lines are returned as rejected, each with InfluxDB's message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from tokenpulse.retry import Backoff, parse_retry_after

log = logging.getLogger(__name__)

_REJECTING_STATUSES = frozenset({400, 422})
_NS = cast(WritePrecision, WritePrecision.NS)


class WriteAborted(Exception):
    """The stop event was set while a batch was still unwritten; nothing of it may be committed."""


@dataclass(frozen=True)
class RejectedLine:
    index: int
    line: str
    error: str


@dataclass
class WriteResult:
    written: int = 0
    rejected: list[RejectedLine] = field(default_factory=list)
    retries: int = 0


class _Transient(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Rejected(Exception):
    pass


class InfluxWriter:
    """Synchronous, retrying writer of line-protocol lines into one bucket. Thread-safe per call."""

    def __init__(
        self,
        url: str,
        token: SecretStr | str,
        org: str,
        bucket: str,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout_ms: int = 30_000,
        gzip: bool = False,
    ) -> None:
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self.url, self.org, self.bucket = url, org, bucket
        self._client = InfluxDBClient(url=url, token=secret, org=org, timeout=timeout_ms, enable_gzip=gzip)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self.auth_problem: str | None = None
        """Set while InfluxDB answers 401/403/404 (wrong token or bucket): what is wrong and the fix."""
        self.auth_failing_since: float | None = None  # time.monotonic() of the first such answer

    def __repr__(self) -> str:
        return f"InfluxWriter(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]

    def write(self, lines: Sequence[str], stop: threading.Event | None = None) -> WriteResult:
        """Write every line or return it as rejected; raise ``WriteAborted`` if ``stop`` is set first."""
        result = WriteResult()
        if lines:
            self._write_range(lines, 0, len(lines), result, stop)
        return result

    def _write_range(
        self, lines: Sequence[str], start: int, end: int, result: WriteResult, stop: threading.Event | None
    ) -> None:
        try:
            self._write_with_retry(lines[start:end], result, stop)
            result.written += end - start
        except _Rejected as exc:
            if end - start == 1:
                log.error("InfluxDB rejected a line (dead-lettered): %s | line: %s", exc, lines[start][:2000])
                result.rejected.append(RejectedLine(start, lines[start], str(exc)))
                return
            middle = (start + end) // 2
            self._write_range(lines, start, middle, result, stop)
            self._write_range(lines, middle, end, result, stop)

    def _write_with_retry(self, lines: Sequence[str], result: WriteResult, stop: threading.Event | None) -> None:
        """POST ``lines`` until InfluxDB takes them: transient failures are retried for as long as it takes
        (tenacity, with ``Backoff.wait``: the server's Retry-After, else exponential backoff with jitter);
        a rejection is raised at once; ``stop`` interrupts the wait."""
        body = "\n".join(lines).encode()

        def aborted() -> WriteAborted:
            return WriteAborted(f"stopped with {len(lines)} lines unwritten to bucket {self.bucket!r}")

        def sleep(delay_s: float) -> None:
            if stop is None:
                self._sleep(delay_s)
            elif stop.wait(delay_s):
                raise aborted()

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            delay_s = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "InfluxDB write to %s bucket %r failed (%s); retry %d in %.2fs",
                self.url,
                self.bucket,
                outcome.exception() if outcome is not None else "?",
                state.attempt_number,
                delay_s,
            )
            result.retries += 1

        if stop is not None and stop.is_set():
            raise aborted()
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            wait=self._backoff.wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        retrying(self._post, body)

    def _post(self, body: bytes) -> None:
        try:
            self._api.write(bucket=self.bucket, org=self.org, record=body, write_precision=_NS)
            self.auth_problem = self.auth_failing_since = None
        except ApiException as exc:
            status = int(exc.status or 0)
            message = _api_message(exc)
            if status in (401, 403, 404):
                if self.auth_failing_since is None:
                    self.auth_failing_since = time.monotonic()
                self.auth_problem = (
                    f"InfluxDB at {self.url} answered HTTP {status} ({message}){_hint(status, self.bucket)}"
                )
            if status in _REJECTING_STATUSES:
                raise _Rejected(f"HTTP {status}: {message}") from None
            if status == 413:
                raise _Rejected(f"HTTP 413: {message}") from None
            headers: Any = exc.headers or {}
            retry_after = parse_retry_after(headers.get("Retry-After"), cap_s=300.0) if status in (429, 503) else None
            hint = _hint(status, self.bucket)
            raise _Transient(f"HTTP {status}: {message}{hint}", retry_after) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None


def _hint(status: int, bucket: str) -> str:
    if status in (401, 403):
        return f": fix TOKENPULSE_INFLUX_TOKEN (a token with write access to bucket {bucket!r})"
    if status == 404:
        return (
            f": bucket {bucket!r} (or its org) does not exist; fix TOKENPULSE_INFLUX_BUCKET / TOKENPULSE_INFLUX_ORG "
            "or create the bucket"
        )
    return ""


def _api_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes | str) and body:
        try:
            parsed = orjson.loads(body)
            if isinstance(parsed, dict) and "message" in parsed:
                return str(parsed["message"])
        except orjson.JSONDecodeError:
            pass
        return body.decode(errors="replace") if isinstance(body, bytes) else body
    return str(exc.reason)

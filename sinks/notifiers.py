"""Alert notifiers: a generic JSON webhook, a Slack-compatible webhook and Alertmanager's ``/api/v2/alerts``.

Each notifier only builds its HTTP request (pure, unit-tested). ``NotificationDispatcher`` sends them: one
bounded queue and one worker task per notifier, so a failing receiver is retried with backoff and jitter
without delaying the pipeline or the other receivers. ``submit`` never blocks; when a queue is full the
oldest alert is dropped, counted and logged. Webhook URLs often carry a secret (Slack's do), so reprs and
logs show the host only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from tokenpulse.retry import Backoff, parse_retry_after
from tokenpulse.schemas import Alert, format_rfc3339_ns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotificationRequest:
    url: str
    json: Any
    headers: dict[str, str] = field(default_factory=dict)


class Notifier(Protocol):
    name: str

    def build(self, alert: Alert) -> NotificationRequest: ...


def _safe_host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


class WebhookNotifier:
    """POSTs the ``Alert`` event JSON itself (the same document as on the alerts topic)."""

    def __init__(self, url: str | SecretStr, name: str = "webhook", headers: dict[str, str] | None = None) -> None:
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.name = name
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, host={_safe_host(self._url.get_secret_value())!r})"

    def build(self, alert: Alert) -> NotificationRequest:
        return NotificationRequest(self._url.get_secret_value(), alert.model_dump(mode="json"), self._headers)


class SlackNotifier:
    """A Slack incoming-webhook message (``text`` plus one coloured attachment with the figures)."""

    _COLOURS = {("firing", "critical"): "#d00000", ("firing", "warning"): "#ffae42"}

    def __init__(self, url: str | SecretStr, name: str = "slack") -> None:
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.name = name

    def __repr__(self) -> str:
        return f"SlackNotifier(name={self.name!r}, host={_safe_host(self._url.get_secret_value())!r})"

    def build(self, alert: Alert) -> NotificationRequest:
        return NotificationRequest(self._url.get_secret_value(), slack_message(alert))


def slack_message(alert: Alert) -> dict[str, Any]:
    icon = ":rotating_light:" if alert.state == "firing" else ":white_check_mark:"
    title = f"{icon} [{alert.state.upper()}] {alert.rule} ({alert.severity}) {alert.provider}/{alert.model}"
    fields = [
        {"title": "workload", "value": alert.workload, "short": True},
        {"title": "metric", "value": alert.metric, "short": True},
        {"title": "value", "value": "n/a" if alert.value is None else f"{alert.value:.4g}", "short": True},
        {"title": "threshold", "value": f"{alert.threshold:.4g}", "short": True},
    ]
    if alert.baseline is not None:
        fields.append({"title": "baseline", "value": f"{alert.baseline:.4g}", "short": True})
    return {
        "text": f"{title}\n{alert.message}",
        "attachments": [
            {
                "color": SlackNotifier._COLOURS.get((alert.state, alert.severity), "#2eb67d"),
                "fallback": alert.message,
                "fields": fields,
                "ts": alert.window_end // 1_000_000_000,
            }
        ],
    }


class AlertmanagerNotifier:
    """POSTs ``[postableAlert]`` to ``<base_url>/api/v2/alerts``; a resolved alert carries ``endsAt``."""

    def __init__(self, base_url: str, name: str = "alertmanager", generator_url: str | None = None) -> None:
        self._url = base_url.rstrip("/") + "/api/v2/alerts"
        self.name = name
        self.generator_url = generator_url

    def __repr__(self) -> str:
        return f"AlertmanagerNotifier(name={self.name!r}, host={_safe_host(self._url)!r})"

    def build(self, alert: Alert) -> NotificationRequest:
        return NotificationRequest(self._url, [alertmanager_alert(alert, self.generator_url)])


def alertmanager_alert(alert: Alert, generator_url: str | None = None) -> dict[str, Any]:
    """One ``postableAlert`` of Alertmanager's API v2 (labels identify the incident across firing/resolved)."""
    labels = {
        "alertname": alert.rule,
        "severity": alert.severity,
        "provider": alert.provider,
        "model": alert.model,
        "workload": alert.workload,
        "metric": alert.metric,
        "source": "tokenpulse",
    }
    annotations = {"summary": alert.message, "threshold": f"{alert.threshold:g}", "alert_id": alert.alert_id}
    if alert.value is not None:
        annotations["value"] = f"{alert.value:g}"
    if alert.baseline is not None:
        annotations["baseline"] = f"{alert.baseline:g}"
    starts_at = format_rfc3339_ns(alert.window_end)
    body: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": starts_at}
    if alert.state == "resolved":
        body["endsAt"] = format_rfc3339_ns(alert.window_end)
    if generator_url:
        body["generatorURL"] = generator_url
    return body


@dataclass
class NotifierStats:
    sent: int = 0
    failed_attempts: int = 0
    dropped: int = 0


class NotificationDispatcher:
    """Delivers alerts to every notifier in the background; ``submit`` is synchronous and never blocks."""

    def __init__(
        self,
        notifiers: list[Notifier],
        *,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
        max_attempts: int = 6,
        queue_size: int = 1000,
        timeout_s: float = 5.0,
    ) -> None:
        self.notifiers = list(notifiers)
        self._client = client
        self._own_client = client is None
        self._backoff = backoff or Backoff(initial_s=0.5, max_s=30.0)
        self._max_attempts = max_attempts
        self._queue_size = queue_size
        self._timeout_s = timeout_s
        self._queues: dict[str, asyncio.Queue[Alert]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.stats: dict[str, NotifierStats] = {n.name: NotifierStats() for n in self.notifiers}

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        for notifier in self.notifiers:
            queue: asyncio.Queue[Alert] = asyncio.Queue(self._queue_size)
            self._queues[notifier.name] = queue
            self._tasks.append(asyncio.create_task(self._deliver(notifier, queue), name=f"notify-{notifier.name}"))

    def submit(self, alert: Alert) -> None:
        for notifier in self.notifiers:
            queue = self._queues[notifier.name]
            if queue.full():
                dropped = queue.get_nowait()
                self.stats[notifier.name].dropped += 1
                log.error("notifier %s is backlogged; dropped alert %s", notifier.name, dropped.alert_id)
            queue.put_nowait(alert)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the queues are empty (or ``timeout_s`` passes)."""
        waits = [asyncio.create_task(q.join()) for q in self._queues.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for task in pending:
                task.cancel()

    async def stop(self, timeout_s: float = 5.0) -> None:
        await self.drain(timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_client and self._client is not None:
            await self._client.aclose()

    async def _deliver(self, notifier: Notifier, queue: asyncio.Queue[Alert]) -> None:
        while True:
            alert = await queue.get()
            try:
                await self._send_with_retry(notifier, alert)
            finally:
                queue.task_done()

    async def _send_with_retry(self, notifier: Notifier, alert: Alert) -> None:
        assert self._client is not None
        request = notifier.build(alert)
        stats = self.stats[notifier.name]
        for attempt in range(self._max_attempts):
            retry_after: float | None = None
            try:
                response = await self._client.post(request.url, json=request.json, headers=request.headers)
                if response.status_code < 300:
                    stats.sent += 1
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), cap_s=60.0)
                elif 400 <= response.status_code < 500 and response.status_code != 408:
                    stats.failed_attempts += 1
                    log.error(
                        "notifier %s refused alert %s: %s %s",
                        notifier.name,
                        alert.alert_id,
                        problem,
                        response.text[:500],
                    )
                    return
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"
            stats.failed_attempts += 1
            delay = retry_after if retry_after is not None else self._backoff.delay_s(attempt)
            log.warning(
                "notifier %s failed for alert %s (%s); attempt %d/%d, next in %.1fs",
                notifier.name,
                alert.alert_id,
                problem,
                attempt + 1,
                self._max_attempts,
                delay,
            )
            if attempt + 1 < self._max_attempts:
                await asyncio.sleep(delay)
        stats.dropped += 1
        log.error("notifier %s gave up on alert %s after %d attempts", notifier.name, alert.alert_id, attempt + 1)

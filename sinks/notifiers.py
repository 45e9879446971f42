"""Alert notifiers: a generic JSON webhook, a Slack-compatible webhook and Alertmanager's ``/api/v2/alerts``.

Each notifier only builds its HTTP request (pure, unit-tested). ``send_alert`` delivers one alert to one
notifier with tenacity's retry loop: exponential backoff with jitter (``Backoff.wait``, honouring
``Retry-After``) for connection errors, 408, 429 and 5xx, for up to ``DeliveryPolicy.retry_for_s`` (hours by
default); any other 4xx is a refusal and is not retried. ``sinks.delivery`` drives it from the alerts
topic. Webhook URLs often carry a secret (Slack's do), so reprs and logs show the host only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay

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

    @property
    def host(self) -> str:
        """``scheme://host[:port]`` of the receiver: all that logs show of its URL."""
        ...

    def build(self, alert: Alert) -> NotificationRequest: ...


def safe_host(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what logs and reprs may show of a notifier URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


class WebhookNotifier:
    """POSTs the ``Alert`` event JSON itself (the same document as on the alerts topic)."""

    def __init__(self, url: str | SecretStr, name: str = "webhook", headers: dict[str, str] | None = None) -> None:
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.name = name
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, host={safe_host(self._url.get_secret_value())!r})"

    @property
    def host(self) -> str:
        return safe_host(self._url.get_secret_value())

    def build(self, alert: Alert) -> NotificationRequest:
        return NotificationRequest(self._url.get_secret_value(), alert.model_dump(mode="json"), self._headers)


class SlackNotifier:
    """A Slack incoming-webhook message (``text`` plus one coloured attachment with the figures)."""

    _COLOURS = {("firing", "critical"): "#d00000", ("firing", "warning"): "#ffae42"}

    def __init__(self, url: str | SecretStr, name: str = "slack") -> None:
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.name = name

    def __repr__(self) -> str:
        return f"SlackNotifier(name={self.name!r}, host={safe_host(self._url.get_secret_value())!r})"

    @property
    def host(self) -> str:
        return safe_host(self._url.get_secret_value())

    def build(self, alert: Alert) -> NotificationRequest:
        return NotificationRequest(self._url.get_secret_value(), slack_message(alert))


def slack_message(alert: Alert) -> dict[str, Any]:
    icon = ":rotating_light:" if alert.state == "firing" else ":white_check_mark:"
    title = f"{icon} [{alert.state.upper()}] {alert.rule} ({alert.severity}) {alert.provider}/{alert.model}"
    fields = [
        {"title": "workload", "value": alert.workload, "short": True},
        {"title": "region / window", "value": f"{alert.region or '-'} / {alert.window or '-'}", "short": True},
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
    """POSTs ``[postableAlert]`` to ``<base_url>/api/v2/alerts``.

    Alertmanager resolves an alert by itself once its ``endsAt`` passes (or, without one, after its
    ``resolve_timeout``, 5 min by default). So a firing alert is re-sent every ``resend_interval_s`` while
    it fires (``SinkRunner`` does that from the rule state), each time with ``endsAt`` = now + 4 x
    ``resend_interval_s`` (as Prometheus does): three lost re-sends in a row still do not resolve it. A
    resolved alert carries ``endsAt`` = the end of the window that resolved it.
    """

    def __init__(
        self,
        base_url: str | SecretStr,
        name: str = "alertmanager",
        generator_url: str | None = None,
        *,
        resend_interval_s: float = 60.0,
        time_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        base = base_url.get_secret_value() if isinstance(base_url, SecretStr) else base_url
        self._url = SecretStr(base.rstrip("/") + "/api/v2/alerts")
        self.name = name
        self.generator_url = generator_url
        self.resend_interval_s = resend_interval_s
        self.time_ns = time_ns

    def __repr__(self) -> str:
        return f"AlertmanagerNotifier(name={self.name!r}, host={safe_host(self._url.get_secret_value())!r})"

    @property
    def host(self) -> str:
        return safe_host(self._url.get_secret_value())

    def build(self, alert: Alert) -> NotificationRequest:
        valid_until = self.time_ns() + int(4 * self.resend_interval_s * 1e9)
        return NotificationRequest(
            self._url.get_secret_value(), [alertmanager_alert(alert, self.generator_url, valid_until_ns=valid_until)]
        )


def alertmanager_alert(
    alert: Alert, generator_url: str | None = None, *, valid_until_ns: int | None = None
) -> dict[str, Any]:
    """One ``postableAlert`` of Alertmanager's API v2 (labels identify the incident across firing/resolved).

    A firing alert gets ``endsAt`` = ``valid_until_ns`` (when given): Alertmanager keeps it active until then.
    """
    labels = {
        "alertname": alert.rule,
        "severity": alert.severity,
        "provider": alert.provider,
        "model": alert.model,
        "workload": alert.workload,
        "metric": alert.metric,
        "source": "tokenpulse",
    }
    if alert.region:
        labels["region"] = alert.region
    if alert.window:
        labels["window"] = alert.window
    annotations = {"summary": alert.message, "threshold": f"{alert.threshold:g}", "alert_id": alert.alert_id}
    if alert.value is not None:
        annotations["value"] = f"{alert.value:g}"
    if alert.baseline is not None:
        annotations["baseline"] = f"{alert.baseline:g}"
    starts_at = format_rfc3339_ns(alert.window_end)
    body: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": starts_at}
    if alert.state == "resolved":
        body["endsAt"] = format_rfc3339_ns(alert.window_end)
    elif valid_until_ns is not None:
        body["endsAt"] = format_rfc3339_ns(max(valid_until_ns, alert.window_end + 1))
    if generator_url:
        body["generatorURL"] = generator_url
    return body


@dataclass
class NotifierStats:
    sent: int = 0
    failed_attempts: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long one alert is retried for one notifier before the failure is recorded and it is given up."""

    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, max_s=300.0))
    retry_for_s: float = 6 * 3600.0
    timeout_s: float = 10.0
    retry_after_cap_s: float = 600.0


class DeliveryFailed(Exception):
    """An alert that a notifier refused, or that could not be delivered within the retry budget."""


class _Retryable(Exception):
    def __init__(self, problem: str, retry_after_s: float | None = None) -> None:
        super().__init__(problem)
        self.retry_after_s = retry_after_s


async def send_alert(
    client: httpx.AsyncClient,
    notifier: Notifier,
    alert: Alert,
    policy: DeliveryPolicy,
    stats: NotifierStats,
) -> None:
    """Deliver ``alert`` to ``notifier`` once it answers 2xx; raises ``DeliveryFailed`` when it refuses the
    alert (a 4xx other than 408/429) or the retry budget runs out."""

    def log_retry(state: RetryCallState) -> None:
        stats.failed_attempts += 1
        outcome = state.outcome
        problem = outcome.exception() if outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "notifier %s (%s) failed for alert %s (%s); attempt %d, next in %.1fs",
            notifier.name,
            notifier.host,
            alert.alert_id,
            problem,
            state.attempt_number,
            wait,
        )

    async def attempt() -> None:
        request = notifier.build(alert)  # rebuilt per attempt: Alertmanager's endsAt moves with the clock
        try:
            response = await client.post(request.url, json=request.json, headers=request.headers)
        except httpx.HTTPError as exc:
            raise _Retryable(type(exc).__name__) from None  # str(exc) may hold the URL
        if response.status_code < 300:
            return
        problem = f"HTTP {response.status_code}"
        if response.status_code in (408, 429) or response.status_code >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), cap_s=policy.retry_after_cap_s)
            raise _Retryable(problem, retry_after)
        stats.failed_attempts += 1
        raise DeliveryFailed(f"{problem} {response.text[:300]}")

    retrying = AsyncRetrying(
        wait=policy.backoff.wait,
        stop=stop_after_delay(policy.retry_for_s),
        retry=retry_if_exception_type(_Retryable),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        await retrying(attempt)
    except _Retryable as exc:
        stats.failed_attempts += 1
        raise DeliveryFailed(f"{exc} after retrying for {policy.retry_for_s:g}s") from None
    stats.sent += 1


async def post_once(client: httpx.AsyncClient, notifier: Notifier, alert: Alert) -> bool:
    """One attempt, no retry (Alertmanager re-sends: the next interval is the retry); True on 2xx."""
    request = notifier.build(alert)
    try:
        response = await client.post(request.url, json=request.json, headers=request.headers)
    except httpx.HTTPError as exc:
        log.warning("re-send of alert %s to %s failed: %s", alert.alert_id, notifier.host, type(exc).__name__)
        return False
    if response.status_code >= 300:
        log.warning("re-send of alert %s to %s: HTTP %d", alert.alert_id, notifier.host, response.status_code)
    return response.status_code < 300

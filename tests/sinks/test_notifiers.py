"""Notifier delivery semantics without a network (httpx's MockTransport): what is retried, what is refused,
when the budget runs out; Alertmanager's endsAt; URLs shown by host only."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from tokenpulse.retry import Backoff
from tokenpulse.schemas import format_rfc3339_ns
from tokenpulse.sinks.notifiers import (
    AlertmanagerNotifier,
    DeliveryFailed,
    DeliveryPolicy,
    NotifierStats,
    SlackNotifier,
    WebhookNotifier,
    alertmanager_alert,
    send_alert,
)
from tokenpulse.testing.sinks import BASE_NS, make_alert

FAST = DeliveryPolicy(backoff=Backoff(initial_s=0.001, max_s=0.002, rng=random.Random(1)), retry_for_s=0.5)


def _deliver(statuses: list[int], policy: DeliveryPolicy = FAST) -> tuple[NotifierStats, list[int], Exception | None]:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses[min(len(calls), len(statuses) - 1)]
        calls.append(status)
        return httpx.Response(status, headers={"Retry-After": "0"} if status == 429 else {})

    stats = NotifierStats()

    async def run() -> Exception | None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            try:
                await send_alert(client, WebhookNotifier("http://hook.example/s3cret"), make_alert(), policy, stats)
            except DeliveryFailed as exc:
                return exc
        return None

    return stats, calls, asyncio.run(run())


def test_transient_failures_are_retried_until_accepted() -> None:
    stats, calls, error = _deliver([503, 429, 502, 200])
    assert error is None and calls == [503, 429, 502, 200]
    assert (stats.sent, stats.failed_attempts) == (1, 3)


def test_a_refusal_is_not_retried() -> None:
    stats, calls, error = _deliver([400])
    assert isinstance(error, DeliveryFailed) and "HTTP 400" in str(error)
    assert calls == [400] and stats.sent == 0


def test_retries_stop_when_the_budget_is_spent() -> None:
    stats, calls, error = _deliver([503])
    assert isinstance(error, DeliveryFailed) and "after retrying for 0.5s" in str(error)
    assert len(calls) > 2 and stats.failed_attempts == len(calls) and stats.sent == 0


def test_alertmanager_firing_ends_four_resends_ahead_resolved_at_its_window() -> None:
    now = BASE_NS + 10**12
    notifier = AlertmanagerNotifier("http://am:9093", resend_interval_s=60.0, time_ns=lambda: now)
    firing = make_alert(region="eu", window="5m")
    [body] = notifier.build(firing).json
    assert body["endsAt"] == alertmanager_alert(firing, valid_until_ns=now + 240 * 10**9)["endsAt"]
    assert (body["labels"]["region"], body["labels"]["window"]) == ("eu", "5m")
    [resolved] = notifier.build(make_alert(state="resolved", window_end=BASE_NS + 60 * 10**9)).json
    assert resolved["endsAt"] == format_rfc3339_ns(BASE_NS + 60 * 10**9)


@pytest.mark.parametrize(
    "notifier",
    [
        WebhookNotifier("https://hooks.example:8443/T0/B0/s3cret"),
        SlackNotifier("https://hooks.example:8443/T0/B0/s3cret"),
        AlertmanagerNotifier("https://hooks.example:8443/s3cret"),
    ],
)
def test_notifier_urls_are_shown_by_host_only(notifier: object) -> None:
    assert "s3cret" not in repr(notifier)
    assert notifier.host == "https://hooks.example:8443"  # type: ignore[attr-defined]


def test_secret_url_files_skip_comments_and_errors_never_show_content(tmp_path) -> None:
    from tokenpulse.sinks.cli import SinkConfigError, read_secret_lines

    urls = tmp_path / "urls"
    urls.write_text("# on-call\nhttps://hooks.example/a/s3cret\n\n  https://hooks.example/b  \n")
    assert read_secret_lines(urls, "--webhook-file") == ["https://hooks.example/a/s3cret", "https://hooks.example/b"]
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(SinkConfigError, match=r"--webhook-file .*empty: the file holds no URL"):
        read_secret_lines(empty, "--webhook-file")
    with pytest.raises(SinkConfigError, match="cannot read it"):
        read_secret_lines(tmp_path / "missing", "--slack-webhook-file")

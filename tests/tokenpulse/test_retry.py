"""The one retry policy: backoff with jitter, Retry-After winning over it, as a tenacity wait strategy."""

from __future__ import annotations

import random

import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from tokenpulse.retry import Backoff


class Flaky(Exception):
    def __init__(self, retry_after_s: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after_s = retry_after_s


def test_delay_grows_to_its_cap_within_the_jitter() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, multiplier=2.0, jitter=0.5, rng=random.Random(7))
    for attempt, base in enumerate([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        assert base * 0.5 <= backoff.delay_s(attempt) <= base


def test_tenacity_waits_retry_after_when_given_else_the_backoff() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, jitter=0.0)
    failures = iter([Flaky(), Flaky(retry_after_s=30.0), Flaky()])
    slept: list[float] = []

    def call() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "ok"

    retrying = Retrying(retry=retry_if_exception_type(Flaky), wait=backoff.wait, sleep=slept.append, reraise=True)
    assert retrying(call) == "ok"
    assert slept == [1.0, 30.0, 4.0]


def test_tenacity_reraises_the_last_failure_when_attempts_run_out() -> None:
    retrying = Retrying(wait=Backoff(jitter=0.0).wait, sleep=lambda _s: None, stop=stop_after_attempt(3), reraise=True)
    with pytest.raises(Flaky):
        retrying(lambda: (_ for _ in ()).throw(Flaky()))

"""A stand-in for kafka-python's ``KafkaProducer`` in the publisher's unit tests (integration tests use Kafka)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaTimeoutError

__all__ = ["FakeProducer"]


class FakeFuture:
    """Resolves at once: ``add_both(f, *args)`` calls ``f(*args, metadata_or_exception)``."""

    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome

    def add_both(self, callback: Callable[..., Any], *args: Any) -> FakeFuture:
        callback(*args, self.outcome if self.outcome is not None else object())
        return self

    def add_callback(self, callback: Callable[..., Any], *args: Any) -> FakeFuture:
        if self.outcome is None:
            callback(*args, object())
        return self

    def add_errback(self, errback: Callable[..., Any], *args: Any) -> FakeFuture:
        if self.outcome is not None:
            errback(*args, self.outcome)
        return self


class FakeProducer:
    """Acknowledges every send unless ``reject(value)`` names an error or ``away`` is set (then times out).

    ``acked`` lists the values acknowledged, in order (a value twice there is a duplicate delivery).
    """

    def __init__(self, reject: Callable[[bytes], BaseException | None] | None = None) -> None:
        self.reject = reject
        self.away = False
        self.acked: list[bytes] = []
        self._lock = threading.Lock()

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> FakeFuture:
        if self.away:
            return FakeFuture(KafkaTimeoutError("broker away"))
        error = self.reject(value) if self.reject is not None else None
        if error is None:
            with self._lock:
                self.acked.append(value)
        return FakeFuture(error)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass

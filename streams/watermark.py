"""Event-time watermark: the latest event time seen, minus a grace period.

A window is *complete* once an event at or after its end has been seen (``max_event_ns >= end``) and
*closed* once the watermark passes its end (``watermark_ns >= end``). Between the two, late events still
update it; after it is closed they are too late.
"""

from __future__ import annotations


class Watermark:
    """Monotonic event-time progress of one partition."""

    __slots__ = ("grace_ns", "max_event_ns")

    def __init__(self, grace_ns: int, max_event_ns: int = -1) -> None:
        if grace_ns < 0:
            raise ValueError("grace must not be negative")
        self.grace_ns = grace_ns
        self.max_event_ns = max_event_ns

    @property
    def watermark_ns(self) -> int:
        return self.max_event_ns - self.grace_ns

    @property
    def started(self) -> bool:
        return self.max_event_ns >= 0

    def is_complete(self, end_ns: int) -> bool:
        return self.max_event_ns >= end_ns

    def is_closed(self, end_ns: int) -> bool:
        return self.watermark_ns >= end_ns

    def observe(self, event_ns: int) -> tuple[int, int] | None:
        """Take an event time; if it moves progress forward return ``(old, new)`` max event times."""
        old = self.max_event_ns
        if event_ns <= old:
            return None
        self.max_event_ns = event_ns
        return old, event_ns

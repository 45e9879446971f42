"""A dead letter: a record that a consumer could not use, kept with its original bytes and the reason.

Dead-letter topics (``tokenpulse.request-timings.dlq``, ``tokenpulse.influx-rejected.dlq``) carry the
original key and value unchanged; the reason and the record's origin travel in headers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeadLetter"]


@dataclass(frozen=True)
class DeadLetter:
    """One record that cannot be used: its original key and bytes, why, and where it came from."""

    key: bytes | None
    value: bytes | None
    error: str
    source_topic: str = ""
    partition: int | None = None
    offset: int | None = None
    line: str | None = None

    def headers(self, source_topic: str | None = None) -> list[tuple[str, bytes]]:
        """Kafka headers: ``error`` and ``source-topic`` always, the source position and any rejected line."""
        found = [("error", self.error.encode()[:4000]), ("source-topic", (source_topic or self.source_topic).encode())]
        if self.partition is not None:
            found.append(("source-partition", str(self.partition).encode()))
        if self.offset is not None:
            found.append(("source-offset", str(self.offset).encode()))
        if self.line is not None:
            found.append(("rejected-line", self.line.encode()[:8000]))
        return found

"""A durable local spool: append-only JSONL, fsync'd, replayed in order when the broker is back.

Each line is ``{"topic": ..., "key": ..., "value": ...}`` with the record's exact bytes as text. A separate
offset file (written atomically) says how far replay has been confirmed; when everything is confirmed the
spool is truncated. A crash between a replayed send and its confirmation re-sends that record once more,
which consumers absorb by deduplicating on ``event_id``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from tokenpulse.private_files import open_private, private_dir


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One spooled record and the spool offset just after it (what to commit once it is delivered)."""

    topic: str
    key: bytes | None
    value: bytes
    end_offset: int


class Spool:
    """Append-only, fsync'd JSONL spool of Kafka records; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_name(path.name + ".offset")
        private_dir(path.parent)
        self._lock = threading.Lock()
        self._repair_torn_tail()
        self._file = open_private(path)  # kept open for the spool's lifetime
        self._committed = self._read_offset()

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, pending_bytes={self.pending_bytes()})"

    def _repair_torn_tail(self) -> None:
        # A crash mid-append leaves a line without its newline; it was never acknowledged, so drop it.
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                os.fsync(handle.fileno())

    def _read_offset(self) -> int:
        try:
            committed = int(self.offset_path.read_text().strip() or "0")
        except (OSError, ValueError):
            return 0
        return min(committed, self.path.stat().st_size)

    def append(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Append one record and fsync before returning: once this returns, the record survives a crash."""
        line = orjson.dumps({"topic": topic, "key": key.decode() if key is not None else None, "value": value.decode()})
        with self._lock:
            self._file.write(line + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def pending_bytes(self) -> int:
        with self._lock:
            return self.path.stat().st_size - self._committed if self.path.exists() else 0

    def has_pending(self) -> bool:
        return self.pending_bytes() > 0

    def pending_count(self) -> int:
        return len(self.read_pending(limit=None))

    def read_pending(self, limit: int | None = 500) -> list[SpooledRecord]:
        """Unconfirmed records in append order (at most ``limit``)."""
        with self._lock:
            with open(self.path, "rb") as handle:
                handle.seek(self._committed)
                data = handle.read()
            offset = self._committed
        records = []
        for line in data.splitlines(keepends=True):
            offset += len(line)
            if not line.endswith(b"\n"):
                break  # being appended right now
            row = orjson.loads(line)
            key = row["key"].encode() if row["key"] is not None else None
            records.append(SpooledRecord(row["topic"], key, row["value"].encode(), offset))
            if limit is not None and len(records) >= limit:
                break
        return records

    def commit(self, end_offset: int) -> None:
        """Confirm delivery of everything before ``end_offset``; truncate the spool once all is confirmed."""
        with self._lock:
            if end_offset <= self._committed:
                return
            size = self.path.stat().st_size
            if end_offset >= size:
                self._file.truncate(0)
                self._file.flush()
                os.fsync(self._file.fileno())
                self._committed = 0
            else:
                self._committed = end_offset
            temp = self.offset_path.with_name(self.offset_path.name + ".tmp")
            with open_private(temp, append=False) as handle:
                handle.write(str(self._committed).encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.offset_path)

    def close(self) -> None:
        with self._lock:
            self._file.close()

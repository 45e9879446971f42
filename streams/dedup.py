"""Bounded ``event_id`` horizon: each id is remembered in a *scope* (a pane of one key) until that scope
is forgotten (its pane closed) or the horizon is over capacity, then the oldest scope is evicted.

A replayed or retried event carries the same ``event_id`` and ``started_at``, so it lands in the same
scope as its first copy: the horizon is as long as a pane stays open (largest window plus grace).
"""

from __future__ import annotations

from collections.abc import Hashable

ID_BYTES = 16


class DedupHorizon:
    """Remembers 16-byte event ids per scope; ``max_ids`` bounds memory across all scopes."""

    def __init__(self, max_ids: int = 2_000_000) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.max_ids = max_ids
        self._scopes: dict[Hashable, set[bytes]] = {}
        self._size = 0
        self.evicted_ids = 0

    def __len__(self) -> int:
        return self._size

    def first_seen(self, scope: Hashable, event_id: bytes) -> bool:
        """Record ``event_id`` in ``scope``; True if it is new, False for a duplicate."""
        ids = self._scopes.get(scope)
        if ids is None:
            ids = self._scopes[scope] = set()
        elif event_id in ids:
            return False
        ids.add(event_id)
        self._size += 1
        if self._size > self.max_ids:
            self._evict_oldest(keep=scope)
        return True

    def seen(self, scope: Hashable, event_id: bytes) -> bool:
        """Whether ``event_id`` is already remembered in ``scope`` (without recording it)."""
        ids = self._scopes.get(scope)
        return ids is not None and event_id in ids

    def forget(self, scope: Hashable) -> None:
        ids = self._scopes.pop(scope, None)
        if ids:
            self._size -= len(ids)

    def ids(self, scope: Hashable) -> bytes:
        """The ids of ``scope`` concatenated, for a changelog record (sorted: same set, same bytes)."""
        return b"".join(sorted(self._scopes.get(scope, ())))

    def restore(self, scope: Hashable, packed: bytes) -> None:
        if len(packed) % ID_BYTES:
            raise ValueError(f"packed ids must be a multiple of {ID_BYTES} bytes, got {len(packed)}")
        self.forget(scope)
        ids = {packed[i : i + ID_BYTES] for i in range(0, len(packed), ID_BYTES)}
        if ids:
            self._scopes[scope] = ids
            self._size += len(ids)

    def _evict_oldest(self, keep: Hashable) -> None:
        for scope in list(self._scopes):
            if self._size <= self.max_ids:
                return
            if scope == keep:
                continue
            self.evicted_ids += len(self._scopes[scope])
            self.forget(scope)

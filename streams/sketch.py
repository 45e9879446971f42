"""Quantile sketches: ``ddsketch.DDSketch`` at 1% relative accuracy, mergeable and serialisable.

ddsketch's own serialisation goes through protobuf, which this project does not depend on, so
``to_state``/``from_state`` write the dense store (offset and bins) as plain JSON-able data. The exact
``max`` is kept beside the sketch (the sketch's own max is exact too, but only while it is not merged
from a restored state), and weights are always 1, so bin counts are integers.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from itertools import accumulate
from typing import Any, cast

import numpy as np
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from tokenpulse.schemas import Quantiles

RELATIVE_ACCURACY = 0.01


class CompactDenseStore(DenseStore):  # type: ignore[misc]
    """ddsketch's ``DenseStore`` with its bins in an ``array('d')``: 8 bytes a bin instead of a pointer plus a
    float object (32 bytes), which keeps a pane's four sketches at a few KiB. Same keys, same answers."""

    def _extend_range(self, key: int, second_key: int | None = None) -> None:
        if second_key is None:
            second_key = key
        new_min_key = min(key, second_key, self.min_key)
        new_max_key = max(key, second_key, self.max_key)
        if self.length() == 0:
            self.bins = array("d", bytes(8 * self._get_new_length(new_min_key, new_max_key)))  # type: ignore[assignment]
            self.offset = new_min_key
            self._adjust(new_min_key, new_max_key)
        elif new_min_key >= self.min_key and new_max_key < self.offset + self.length():
            self.min_key = new_min_key
            self.max_key = new_max_key
        else:
            new_length = self._get_new_length(new_min_key, new_max_key)
            if new_length > self.length():
                self.bins.extend(array("d", bytes(8 * (new_length - self.length()))))
            self._adjust(new_min_key, new_max_key)

    def merge(self, store: CompactDenseStore) -> None:  # type: ignore[override]
        """As ``DenseStore.merge``, with the bin additions done by numpy instead of a Python loop."""
        if store.count == 0:
            return
        if self.count == 0:
            self.copy(store)
            return
        if store.min_key < self.min_key or store.max_key > self.max_key:
            self._extend_range(store.min_key, store.max_key)
        mine = np.frombuffer(cast(Any, self.bins), dtype=np.float64)
        theirs = np.frombuffer(cast(Any, store.bins), dtype=np.float64)
        start, stop = store.min_key - self.offset, store.max_key - self.offset + 1
        mine[start:stop] += theirs[store.min_key - store.offset : store.max_key - store.offset + 1]
        self.count += store.count

    def keys_at_ranks(self, ranks: list[float]) -> list[int]:
        """``key_at_rank(rank, lower=True)`` for several ranks in one C-speed pass over the bins."""
        cumulative = list(accumulate(self.bins))
        last = len(cumulative) - 1
        return [
            self.max_key if index > last else index + self.offset
            for index in (bisect_right(cumulative, rank) for rank in ranks)
        ]

    def _shift_bins(self, shift: int) -> None:
        if shift > 0:
            self.bins = array("d", bytes(8 * shift)) + self.bins[:-shift]  # type: ignore[assignment,operator]
        elif shift < 0:
            self.bins = self.bins[-shift:] + array("d", bytes(8 * -shift))  # type: ignore[operator]
        self.offset -= shift


_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)  # immutable: shared by every sketch
_MULTIPLIER: float = _MAPPING._multiplier
_KEY_OFFSET: float = _MAPPING._offset
_MIN_POSITIVE: float = _MAPPING.min_possible


def _new_ddsketch() -> BaseDDSketch:
    return BaseDDSketch(
        mapping=_MAPPING,
        store=CompactDenseStore(),
        negative_store=CompactDenseStore(),
        zero_count=0.0,
    )


class QuantileSketch:
    """Values of one metric in one pane or window: p50/p95/p99 within 1% relative error, exact count and max."""

    __slots__ = ("_sketch",)

    def __init__(self) -> None:
        self._sketch = _new_ddsketch()

    def add(self, value: float) -> None:
        """``DDSketch.add(value)`` with weight 1, inlined for the common case (a positive value whose bin is
        already in the store's range): the same key formula as ``LogarithmicMapping.key``, the same bins."""
        sketch = self._sketch
        if value > _MIN_POSITIVE:
            store = sketch._store
            key = int(math.ceil(math.log(value, 2) * _MULTIPLIER) + _KEY_OFFSET)
            if store.min_key <= key <= store.max_key:
                store.bins[key - store.offset] += 1.0
                store.count += 1.0
            else:
                store.add(key, 1.0)
            sketch._count += 1.0
            sketch._sum += value
            if value < sketch._min:
                sketch._min = value
            if value > sketch._max:
                sketch._max = value
        else:
            sketch.add(value)

    def merge(self, other: QuantileSketch) -> None:
        """Add every value of ``other`` to this sketch (exact: both use the same bin mapping)."""
        self._sketch.merge(other._sketch)

    @property
    def count(self) -> int:
        return int(self._sketch.count)

    @property
    def max(self) -> float | None:
        return float(self._sketch._max) if self.count else None

    def quantile(self, q: float) -> float | None:
        """Value at quantile ``q`` (0..1) within 1% relative error, clamped to the exact max; None if empty."""
        if not self.count:
            return None
        value = self._sketch.get_quantile_value(q)
        return min(float(value), float(self._sketch._max)) if value is not None else None

    def quantiles(self) -> Quantiles | None:
        """p50, p95, p99 and the exact max, or None for an empty sketch."""
        if not self.count:
            return None
        top = float(self._sketch._max)
        p50, p95, p99 = (min(value, top) for value in self._values_at((0.5, 0.95, 0.99)))
        return Quantiles(p50=p50, p95=max(p95, p50), p99=max(p99, p95, p50), max=max(top, p99, p95, p50))

    def _values_at(self, quantiles: tuple[float, ...]) -> list[float]:
        # Same answers as DDSketch.get_quantile_value (values are never negative: durations, rates),
        # with one pass over the bins for all quantiles.
        sketch = self._sketch
        if sketch._negative_store.count:
            return [float(sketch.get_quantile_value(q) or 0.0) for q in quantiles]
        zeros = sketch._zero_count
        ranks = [q * (sketch.count - 1) for q in quantiles]
        positive = [rank - zeros for rank in ranks if rank >= zeros]
        keys = iter(sketch._store.keys_at_ranks(positive)) if positive else iter(())
        return [0.0 if rank < zeros else float(sketch._mapping.value(next(keys))) for rank in ranks]

    def to_state(self) -> dict[str, Any]:
        """A JSON-able snapshot; ``from_state`` rebuilds an equal sketch."""
        sketch = self._sketch
        if not sketch.count:
            return {}
        return {
            "z": int(sketch._zero_count),
            "p": _store_state(sketch._store),
            "n": _store_state(sketch._negative_store),
            "min": sketch._min,
            "max": sketch._max,
            "sum": sketch._sum,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QuantileSketch:
        restored = cls()
        if not state:
            return restored
        sketch = restored._sketch
        _load_store(sketch._store, state["p"])
        _load_store(sketch._negative_store, state["n"])
        sketch._zero_count = float(state["z"])
        sketch._count = sketch._store.count + sketch._negative_store.count + sketch._zero_count
        sketch._min = float(state["min"])
        sketch._max = float(state["max"])
        sketch._sum = float(state["sum"])
        return restored


def _store_state(store: CompactDenseStore) -> list[Any]:
    if not store.count:
        return []
    bins = store.bins[store.min_key - store.offset : store.max_key - store.offset + 1]
    return [store.min_key, [int(b) for b in bins]]


def _load_store(store: CompactDenseStore, state: list[Any]) -> None:
    if not state:
        return
    min_key, bins = state
    store.offset = min_key
    store.min_key = min_key
    store.max_key = min_key + len(bins) - 1
    store.bins = array("d", bins)  # type: ignore[assignment]
    store.count = float(sum(bins))

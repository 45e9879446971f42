"""A fake clock for tests: monotonic and wall time that advance only when told."""

from __future__ import annotations


class FakeClock:
    """Drop-in for the ``monotonic_ns``/``time_ns`` callables that our components take."""

    def __init__(self, start_ns: int = 1_000_000_000, wall_start_ns: int = 1_780_000_000_000_000_000) -> None:
        self._mono = start_ns
        self._wall = wall_start_ns

    def monotonic_ns(self) -> int:
        return self._mono

    def time_ns(self) -> int:
        return self._wall

    def advance(self, *, ns: int = 0, ms: float = 0.0, s: float = 0.0) -> None:
        step = ns + int(ms * 1_000_000) + int(s * 1_000_000_000)
        if step < 0:
            raise ValueError("a clock does not go backwards")
        self._mono += step
        self._wall += step

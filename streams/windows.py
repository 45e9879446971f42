"""Event-time window assignment: tumbling (``1m``) and hopping (``5m/1m``) windows, aligned to the epoch.

Windows of a spec start at every multiple of its step and last its size, so ``5m/1m`` windows are
``[k*1m, k*1m + 5m)``. Aggregation runs on *panes*, the largest slice that divides every size and step
of the configured specs; each event updates exactly one pane and a window is the merge of its panes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tokenpulse.durations import DurationError, format_duration, parse_duration_ns


class WindowSpecError(ValueError):
    """A window spec that cannot be parsed; the message shows the accepted form."""


@dataclass(frozen=True)
class WindowSpec:
    """One window family: ``size_ns`` long, a new window every ``step_ns`` (``step == size``: tumbling)."""

    size_ns: int
    step_ns: int

    def __post_init__(self) -> None:
        if self.size_ns <= 0 or self.step_ns <= 0:
            raise WindowSpecError("window size and step must be positive")
        if self.step_ns > self.size_ns:
            raise WindowSpecError("a hopping window's step must not exceed its size (gaps would drop events)")
        if self.size_ns % self.step_ns:
            raise WindowSpecError("a hopping window's size must be a whole number of steps, e.g. '5m/1m'")

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        """``"1m"`` (tumbling) or ``"5m/1m"`` (5 minutes long, every minute)."""
        size, _, step = text.partition("/")
        try:
            size_ns = parse_duration_ns(size)
            spec = cls(size_ns, parse_duration_ns(step) if step else size_ns)
            format_duration(spec.size_ns)  # reject sub-second windows early: WindowStats.window needs a label
        except DurationError as exc:
            raise WindowSpecError(f"window {text!r}: {exc}") from None
        return spec

    @property
    def label(self) -> str:
        """The ``WindowStats.window`` value, e.g. ``5m``."""
        return format_duration(self.size_ns)

    @property
    def text(self) -> str:
        """The spec as parsed back by ``parse``."""
        if self.step_ns == self.size_ns:
            return self.label
        return f"{self.label}/{format_duration(self.step_ns)}"

    def windows_containing(self, t_ns: int) -> list[tuple[int, int]]:
        """``(start, end)`` of every window that contains instant ``t_ns``, oldest first."""
        last_start = t_ns - t_ns % self.step_ns
        starts = range(last_start - self.size_ns + self.step_ns, last_start + 1, self.step_ns)
        return [(start, start + self.size_ns) for start in starts if start >= 0]

    def latest_end_containing(self, t_ns: int) -> int:
        """End of the last window that contains ``t_ns``: after it closes, ``t_ns`` is too late for this spec."""
        return t_ns - t_ns % self.step_ns + self.size_ns

    def first_end_after(self, t_ns: int) -> int:
        """The smallest window end strictly after ``t_ns`` (the oldest window still open at ``t_ns``)."""
        offset = self.size_ns % self.step_ns
        k = (t_ns - offset) // self.step_ns + 1
        return k * self.step_ns + offset

    def ends_between(self, after_ns: int, until_ns: int) -> Iterator[int]:
        """Window ends ``e`` with ``after_ns < e <= until_ns``, in order."""
        end = self.first_end_after(after_ns)
        while end <= until_ns:
            yield end
            end += self.step_ns


def parse_window_specs(texts: Sequence[str]) -> tuple[WindowSpec, ...]:
    """Parse a list of specs; two specs with the same size would emit the same ``WindowStats`` key."""
    specs = tuple(WindowSpec.parse(text) for text in texts)
    if not specs:
        raise WindowSpecError("at least one window is needed, e.g. --windows 1m,5m/1m")
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise WindowSpecError(f"window sizes must differ (they key WindowStats): {', '.join(texts)}")
    return specs


def pane_size_ns(specs: Sequence[WindowSpec]) -> int:
    """The largest slice that divides every size and step: each window is a whole number of panes."""
    return math.gcd(*(value for spec in specs for value in (spec.size_ns, spec.step_ns)))

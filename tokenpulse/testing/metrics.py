"""Reading Prometheus exposition text in tests: ``Samples(text).value("name_total", label="x")``."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """The samples of one scrape, looked up by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self._values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Samples:
        """Render ``registry`` with ``generate_latest`` and parse it back."""
        return cls(generate_latest(registry).decode())

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the sample ``name`` with exactly these labels, or None if there is none."""
        return self._values.get((name, frozenset(labels.items())))

    def labelled(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample called ``name``, by its label set."""
        return {labels: value for (sample, labels), value in self._values.items() if sample == name}

    def names(self) -> set[str]:
        return {name for name, _ in self._values}


def scrape_until(url: str, done: Callable[[Samples], bool], timeout_s: float, context: Callable[[], str]) -> Samples:
    """Scrape ``url`` every 0.5 s until ``done(samples)``; else fail with the last scrape and ``context()``
    (the serving process's log, say). A refused connection counts as "still starting"."""
    deadline = time.monotonic() + timeout_s
    last: Samples | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5.0)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            last = Samples(response.text)
            if done(last):
                return last
        time.sleep(0.5)
    shown = "\n".join(line for line in (last.text if last else "").splitlines() if line.startswith("tokenpulse_"))
    raise AssertionError(f"metrics not reached within {timeout_s}s; last scrape:\n{shown}\n{context()}")

"""Sketch error and cost: p50/p95/p99 of QuantileSketch against exact numpy quantiles.

    .venv/bin/python bench/sketch_error.py [--n 100000]

Relative error is measured against the nearest exact order statistic (numpy ``lower``/``higher``), which
is what DDSketch guarantees within 1%; add cost is per value, merge cost per 5-pane window.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tokenpulse.streams.sketch import QuantileSketch


def relative_error(estimate: float, values: np.ndarray, q: float) -> float:
    lower = float(np.quantile(values, q, method="lower"))
    higher = float(np.quantile(values, q, method="higher"))
    if lower <= estimate <= higher:
        return 0.0
    nearest = lower if estimate < lower else higher
    return abs(estimate - nearest) / nearest if nearest else abs(estimate)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    datasets = {
        "lognormal ttft": rng.lognormal(5.5, 0.6, args.n),
        "heavy tail (pareto 1.1)": rng.pareto(1.1, args.n) + 0.5,
        "bimodal 50/5000": np.concatenate([rng.normal(50, 2, args.n * 9 // 10), rng.normal(5000, 50, args.n // 10)]),
        "sorted descending": np.sort(rng.lognormal(3, 2, args.n))[::-1],
    }
    print(f"{'dataset':26s} {'p50 err':>9s} {'p95 err':>9s} {'p99 err':>9s} {'add µs':>8s}")
    for name, values in datasets.items():
        sketch = QuantileSketch()
        floats = values.clip(0).tolist()
        start = time.perf_counter()
        for value in floats:
            sketch.add(value)
        add_us = (time.perf_counter() - start) / len(floats) * 1e6
        errors = [relative_error(sketch.quantile(q) or 0.0, values.clip(0), q) for q in (0.5, 0.95, 0.99)]
        print(f"{name:26s} " + " ".join(f"{e * 100:8.3f}%" for e in errors) + f" {add_us:8.2f}")
    panes = [QuantileSketch() for _ in range(5)]
    for pane in panes:
        for value in rng.lognormal(6, 1, 2_000).tolist():
            pane.add(value)
    start = time.perf_counter()
    rounds = 200
    for _ in range(rounds):
        window = QuantileSketch()
        for pane in panes:
            window.merge(pane)
        window.quantiles()
    print(f"5-pane merge + p50/p95/p99: {(time.perf_counter() - start) / rounds * 1e6:.0f} µs per window")


if __name__ == "__main__":
    main()

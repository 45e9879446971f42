import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpulse.streams.sketch import RELATIVE_ACCURACY, QuantileSketch


def assert_within_sketch_error(estimate, values, q):
    """The sketch answers within 1% of a value between the exact lower and higher rank neighbours."""
    lower = np.quantile(values, q, method="lower")
    higher = np.quantile(values, q, method="higher")
    assert lower * (1 - RELATIVE_ACCURACY) - 1e-12 <= estimate <= higher * (1 + RELATIVE_ACCURACY) + 1e-12


def sketch_of(values):
    sketch = QuantileSketch()
    for value in values:
        sketch.add(float(value))
    return sketch


DATASETS = {
    "lognormal": lambda rng: rng.lognormal(5, 1.2, 20_000),
    "bimodal": lambda rng: np.concatenate([rng.normal(50, 2, 9_000), rng.normal(5_000, 50, 1_000)]).clip(0.001),
    "heavy_tail": lambda rng: rng.pareto(1.1, 20_000) + 0.5,
    "constant": lambda rng: np.full(5_000, 42.0),
    "tiny_and_huge": lambda rng: np.concatenate([np.full(100, 1e-3), np.full(100, 1e6), rng.uniform(1, 2, 10)]),
    "with_zeros": lambda rng: np.concatenate([np.zeros(300), rng.exponential(100, 3_000)]),
    "sorted_adversarial": lambda rng: np.sort(rng.lognormal(3, 2, 10_000))[::-1],
}


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_quantiles_within_one_percent(name, q):
    values = DATASETS[name](np.random.default_rng(7))
    sketch = sketch_of(values)
    assert sketch.count == len(values)
    assert sketch.max == pytest.approx(values.max())
    assert_within_sketch_error(sketch.quantile(q), values, q)


def test_merged_sketches_answer_like_one_sketch():
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(4, 1, 3_000) for _ in range(5)]
    merged = QuantileSketch()
    for part in parts:
        merged.merge(sketch_of(part))
    whole = sketch_of(np.concatenate(parts))
    assert merged.quantiles() == whole.quantiles()
    assert_within_sketch_error(merged.quantile(0.95), np.concatenate(parts), 0.95)


def test_state_round_trip_is_exact_and_still_mergeable():
    rng = np.random.default_rng(5)
    sketch = sketch_of(rng.lognormal(2, 1, 4_000))
    restored = QuantileSketch.from_state(sketch.to_state())
    assert restored.quantiles() == sketch.quantiles()
    assert restored.count == sketch.count
    for value in (1e-4, 1e7, 3.0):
        restored.add(value)
        sketch.add(value)
    assert restored.quantiles() == sketch.quantiles()
    assert QuantileSketch.from_state(QuantileSketch().to_state()).quantiles() is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1, max_size=300))
def test_any_nonnegative_data_stays_within_error(values):
    data = np.array(values)
    sketch = QuantileSketch.from_state(sketch_of(data).to_state())
    quantiles = sketch.quantiles()
    assert quantiles is not None
    assert quantiles.max == data.max()
    for q, estimate in ((0.5, quantiles.p50), (0.95, quantiles.p95), (0.99, quantiles.p99)):
        assert_within_sketch_error(estimate, data, q)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_fast_quantiles_equal_ddsketch_reference(name):
    values = DATASETS[name](np.random.default_rng(11))
    sketch = sketch_of(values)
    raw = sketch._sketch
    reference = [min(float(raw.get_quantile_value(q)), float(raw._max)) for q in (0.5, 0.95, 0.99)]
    quantiles = sketch.quantiles()
    assert [quantiles.p50, quantiles.p95, quantiles.p99] == reference


def test_inlined_add_fills_the_same_bins_as_ddsketch():
    from ddsketch import DDSketch

    rng = np.random.default_rng(11)
    values = np.concatenate([rng.lognormal(5, 2, 3000), [0.0, 1e-12, 5e-324, 1e9, 0.5, 0.5, 123.0]])
    ours, reference = QuantileSketch(), DDSketch(RELATIVE_ACCURACY)
    for value in values.tolist():
        ours.add(value)
        reference.add(value)
    for q in (0.0, 0.01, 0.5, 0.95, 0.99, 1.0):
        assert ours._sketch.get_quantile_value(q) == reference.get_quantile_value(q)
    assert (ours.count, ours._sketch._sum, ours._sketch._min) == (reference.count, reference.sum, reference._min)
    assert ours._sketch._zero_count == reference._zero_count

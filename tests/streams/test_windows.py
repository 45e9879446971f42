import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpulse.durations import parse_duration_ns
from tokenpulse.streams.windows import WindowSpec, WindowSpecError, pane_size_ns, parse_window_specs

S = 1_000_000_000
M = 60 * S


def test_parse_tumbling_and_hopping():
    assert WindowSpec.parse("1m") == WindowSpec(M, M)
    assert WindowSpec.parse("5m/1m") == WindowSpec(5 * M, M)
    assert WindowSpec.parse("5m/1m").label == "5m"
    assert WindowSpec.parse("5m/1m").text == "5m/1m"
    assert parse_duration_ns("250ms") == 250_000_000


@pytest.mark.parametrize("text", ["", "1x", "m", "1m/2m", "5m/2m", "0s", "1500ms"])
def test_bad_specs_name_the_fix(text):
    with pytest.raises(WindowSpecError):
        WindowSpec.parse(text)


def test_duplicate_sizes_rejected():
    with pytest.raises(WindowSpecError, match="differ"):
        parse_window_specs(["5m", "5m/1m"])


def test_assignment_of_a_boundary_instant():
    spec = WindowSpec.parse("5m/1m")
    windows = spec.windows_containing(10 * M)
    assert windows == [(s * M, s * M + 5 * M) for s in (6, 7, 8, 9, 10)]
    assert WindowSpec.parse("1m").windows_containing(10 * M) == [(10 * M, 11 * M)]
    assert WindowSpec.parse("1m").windows_containing(11 * M - 1) == [(10 * M, 11 * M)]


def test_pane_size_is_gcd():
    assert pane_size_ns(parse_window_specs(["1m", "5m/1m"])) == M
    assert pane_size_ns(parse_window_specs(["10s", "30s/15s"])) == 5 * S


@given(
    size_steps=st.sampled_from([(60, 60), (300, 60), (30, 15), (10, 10), (20, 5)]),
    t=st.integers(min_value=1_000, max_value=10**6),
)
def test_windows_contain_t_and_agree_with_ends(size_steps, t):
    spec = WindowSpec(size_steps[0] * S, size_steps[1] * S)
    t_ns = t * S + 7
    windows = spec.windows_containing(t_ns)
    assert windows, "every instant is in at least one window"
    for start, end in windows:
        assert start <= t_ns < end
        assert end - start == spec.size_ns
    assert windows[-1][1] == spec.latest_end_containing(t_ns)
    assert windows[0][1] == spec.first_end_after(t_ns)
    ends = list(spec.ends_between(t_ns - spec.size_ns, t_ns + spec.size_ns))
    expected = [
        k * spec.step_ns + spec.size_ns
        for k in range(-spec.size_ns // spec.step_ns - 2, (t_ns + spec.size_ns) // spec.step_ns + 2)
        if t_ns - spec.size_ns < k * spec.step_ns + spec.size_ns <= t_ns + spec.size_ns
    ]
    assert ends == expected

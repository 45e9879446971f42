import numpy as np
import pytest

from tokenpulse.streams.engine import Outcome, PartitionWindows, WindowConfig
from tokenpulse.streams.sketch import RELATIVE_ACCURACY
from tokenpulse.testing.streams import DEFAULT_START_NS, TimingFactory, TimingKey, default_keys, exact_windows

S = 1_000_000_000
M = 60 * S
CONFIG = WindowConfig.parse(["1m", "5m/1m"], "10s")


def run(events, config=CONFIG, state=None, first_offset=0):
    state = state or PartitionWindows(0, config)
    outcomes = [state.handle(first_offset + i, e) for i, e in enumerate(events)]
    return state, outcomes


def final_by_window(emitted):
    """The last emission of each window wins downstream (same key, same window_end)."""
    return {(s.provider, s.model, s.workload, s.region, s.window, s.window_end): s for s in emitted}


def within(estimate, values, q):
    lower = np.quantile(values, q, method="lower")
    higher = np.quantile(values, q, method="higher")
    return lower * (1 - RELATIVE_ACCURACY) - 1e-9 <= estimate <= higher * (1 + RELATIVE_ACCURACY) + 1e-9


def flush_event(factory, keys, at_ns):
    return [factory.event(key, at_ns) for key in keys]


def test_counts_exact_and_quantiles_within_error_for_every_closed_window():
    factory = TimingFactory(seed=11)
    keys = default_keys(4)
    events = list(factory.stream(keys, 6_000, interval_ns=S // 10, jitter_ns=3 * S))
    end_of_data = DEFAULT_START_NS + 600 * S
    state, outcomes = run(events + flush_event(factory, keys, end_of_data + 10 * M))
    assert outcomes.count(Outcome.ACCEPTED) == len(events) + len(keys)
    emitted = final_by_window(state.take_emitted())
    checked = 0
    for label, size, step in (("1m", M, M), ("5m", 5 * M, M)):
        exact = exact_windows(events, size, step)
        for (provider, model, workload, region, end), want in exact.items():
            got = emitted[(provider, model, workload, region, label, end)]
            assert got.count == want.count
            assert got.error_count == want.error_count
            assert got.prompt_tokens == want.prompt_tokens
            assert got.cost_usd == pytest.approx(want.cost_usd, rel=1e-9)
            assert got.e2e_ms.max == max(want.e2e_ms)
            for q, value in ((0.5, got.e2e_ms.p50), (0.95, got.e2e_ms.p95), (0.99, got.e2e_ms.p99)):
                assert within(value, want.e2e_ms, q)
            assert within(got.ttft_ms.p95, want.ttft_ms, 0.95)
            checked += 1
    assert checked >= 4 * (10 + 14)


def test_duplicates_are_counted_once():
    factory = TimingFactory(seed=2)
    key = TimingKey("sim", "m")
    events = list(factory.stream([key], 50, interval_ns=S))
    replays = events[10:20]  # a spool replay: same ids, new offsets
    state, outcomes = run(events + replays + [factory.event(key, DEFAULT_START_NS + 10 * M)])
    assert outcomes.count(Outcome.DUPLICATE) == 10
    assert state.counters.duplicates == 10
    emitted = final_by_window(state.take_emitted())
    assert emitted[("sim", "m", "chat", "eu-west", "1m", DEFAULT_START_NS + M)].count == 50


def test_late_within_grace_updates_and_re_emits_beyond_grace_is_counted_late():
    factory = TimingFactory(seed=3)
    key = TimingKey("sim", "m")
    config = WindowConfig.parse(["1m"], "10s")
    t0 = DEFAULT_START_NS
    state = PartitionWindows(0, config)
    state.handle(0, factory.event(key, t0 + 30 * S))
    state.handle(1, factory.event(key, t0 + 65 * S))  # window [t0, t0+1m) complete: first emission
    first = state.take_emitted()
    assert [(s.window_end, s.count) for s in first] == [(t0 + M, 1)]
    assert state.handle(2, factory.event(key, t0 + 50 * S)) is Outcome.ACCEPTED  # late, within grace
    state.handle(3, factory.event(key, t0 + 71 * S))  # watermark 61 s: window closes, emitted again
    second = state.take_emitted()
    assert [(s.window_end, s.count, s.late_events) for s in second] == [(t0 + M, 2, 0)]
    assert state.handle(4, factory.event(key, t0 + 40 * S)) is Outcome.LATE  # beyond grace
    assert state.counters.late == 1
    state.handle(5, factory.event(key, t0 + 200 * S))
    by_end = {s.window_end: s for s in state.take_emitted()}
    assert t0 + M not in by_end  # closed windows are never emitted again
    assert by_end[t0 + 2 * M].late_events == 1  # counted in the window open when it arrived
    assert by_end[t0 + 2 * M].count == 2


def test_restore_after_crash_replays_without_double_counting():
    factory = TimingFactory(seed=4)
    keys = default_keys(3)
    events = list(factory.stream(keys, 3_000, interval_ns=S // 5, jitter_ns=2 * S))
    events += events[100:150]  # producer retries
    events += flush_event(factory, keys, DEFAULT_START_NS + 30 * M)
    reference, _ = run(events)
    want = final_by_window(reference.take_emitted())

    crashed = PartitionWindows(0, CONFIG)
    emitted = []
    snapshot = []
    for offset, event in enumerate(events[:1_800]):
        crashed.handle(offset, event)
        if offset == 1_200:
            snapshot = crashed.changelog_records()  # the last flush before the crash
            emitted += crashed.take_emitted()
    # the crash loses everything after the flush; the committed offset is older still (900)
    restored = PartitionWindows.restore(0, CONFIG, snapshot)
    for offset in range(900, len(events)):
        restored.handle(offset, events[offset])
    emitted += restored.take_emitted()
    got = final_by_window(emitted)
    assert got.keys() == want.keys()
    for key, stats in want.items():
        assert got[key] == stats
    assert restored.counters.replayed > 0


def test_two_partitions_emit_what_one_does():
    factory = TimingFactory(seed=5)
    keys = default_keys(6)
    events = list(factory.stream(keys, 2_000, interval_ns=S // 4))
    events += flush_event(factory, keys, DEFAULT_START_NS + 30 * M)
    one, _ = run(events)
    parts = [PartitionWindows(p, CONFIG) for p in (0, 1)]
    for offset, event in enumerate(events):
        parts[hash(event.model) % 2].handle(offset, event)
    split = {}
    for part in parts:
        split.update(final_by_window(part.take_emitted()))
    assert split == final_by_window(one.take_emitted())


def test_changelog_drops_closed_panes():
    factory = TimingFactory(seed=6)
    key = TimingKey("sim", "m")
    state, _ = run(list(factory.stream([key], 600, interval_ns=S)))
    assert state.open_panes <= 7  # 5m window + 10 s grace, in 1 minute panes
    records = state.changelog_records()
    assert any(value is None for _, value in records)  # tombstones for dropped panes
    restored = PartitionWindows.restore(0, CONFIG, records)
    assert restored.open_panes == state.open_panes
    assert restored.watermark.max_event_ns == state.watermark.max_event_ns


def test_an_event_delivered_out_of_offset_order_after_a_restore_is_applied_not_taken_for_a_replay():
    factory = TimingFactory(seed=5)
    key = TimingKey("sim", "m")
    t0 = DEFAULT_START_NS
    crashed = PartitionWindows(0, CONFIG)
    before = [factory.event(key, t0 + offset * S) for offset in range(10)]
    for offset, event in enumerate(before):
        crashed.handle(offset, event)
    restored = PartitionWindows.restore(0, CONFIG, crashed.changelog_records())
    # After the restart a fetch hands over offset 12 before offset 11 (never applied before the crash).
    later, skipped = factory.event(key, t0 + 12 * S), factory.event(key, t0 + 11 * S)
    assert restored.handle(12, later) is Outcome.ACCEPTED
    assert restored.handle(11, skipped) is Outcome.ACCEPTED
    # ...while a true replay (offset 5, applied before the crash) is still recognised.
    assert restored.handle(5, before[5]) is Outcome.REPLAYED
    restored.advance_event_time(t0 + 10 * M)
    minute = [s for s in restored.take_emitted() if s.window == "1m" and s.window_start == t0 - t0 % M]
    assert minute[-1].count == 12


def test_a_crash_that_leaves_any_prefix_of_a_flush_durable_still_ends_exact():
    # The worker writes one flush's records to one changelog partition, in order; a crash can leave any
    # prefix of them durable. The flush below closes windows, so it holds pane updates, tombstones and the
    # meta record. After a restore from each prefix, the worker skips offsets up to the restored meta's
    # last offset (as WindowProcessor does) and replays the rest; every window must end as without a crash.
    factory = TimingFactory(seed=12)
    keys = default_keys(3)
    events = list(factory.stream(keys, 2_400, interval_ns=S // 4, jitter_ns=S))
    events += flush_event(factory, keys, DEFAULT_START_NS + 30 * M)
    reference, _ = run(events)
    want = final_by_window(reference.take_emitted())

    live = PartitionWindows(0, CONFIG)
    table: dict[bytes, bytes | None] = {}
    before_crash = []
    first, second = 1_000, 1_700  # two flushes; the crash hits the second one
    for offset, event in enumerate(events[: second + 1]):
        live.handle(offset, event)
        if offset == first:
            table.update(live.changelog_records())
            before_crash += live.take_emitted()
    crashing = live.changelog_records()
    assert any(value is None for _, value in crashing), "the crashing flush must drop closed panes"
    before_crash += live.take_emitted()  # windows are made durable before any changelog record

    for durable in range(len(crashing) + 1):
        state = dict(table)
        state.update(crashing[:durable])
        restored = PartitionWindows.restore(0, CONFIG, [(k, v) for k, v in state.items() if v is not None])
        for offset in range(restored.last_offset + 1, len(events)):
            restored.handle(offset, events[offset])
        got = final_by_window(before_crash + restored.take_emitted())
        assert got.keys() == want.keys(), durable
        wrong = {key: (got[key].count, stats.count) for key, stats in want.items() if got[key] != stats}
        assert not wrong, f"{durable} of {len(crashing)} records durable: {list(wrong.items())[:3]}"


def test_changelog_records_stay_small_and_a_panes_ids_are_sent_once():
    factory = TimingFactory(seed=21)
    key = default_keys(1)
    events = list(factory.stream(key, 50_000, interval_ns=1_000))  # 50,000 events in one pane
    state = PartitionWindows(0, CONFIG)
    for offset, event in enumerate(events[:49_990]):
        state.handle(offset, event)
    first = state.changelog_records()
    assert max(len(k) + len(v or b"") for k, v in first) < 70_000  # was one 1 MB record: over Kafka's limit
    for offset, event in enumerate(events[49_990:], start=49_990):
        state.handle(offset, event)
    second = state.changelog_records()
    id_bytes = sum(len(v or b"") for k, v in second if k.startswith(b'["ids"'))
    assert id_bytes == 10 * 16  # only the new ids, raw
    restored = PartitionWindows.restore(0, CONFIG, [*first, *second])
    assert all(restored.handle(i, e) is Outcome.REPLAYED for i, e in enumerate(events[:100]))
    assert restored.handle(len(events), events[5]) is Outcome.DUPLICATE  # a retry with a new offset

"""The worker against a real Kafka broker: exact windows, dead letters, dedup, late events, SIGKILL."""

import os
import time

import orjson
import pytest

from tokenpulse.schemas import WindowStats, decode
from tokenpulse.streams.cli import worker_argv
from tokenpulse.streams.sketch import RELATIVE_ACCURACY
from tokenpulse.testing.streams import (
    DEFAULT_START_NS,
    HISTORICAL_MAX_AGE,
    TimingFactory,
    TimingKey,
    WorkerProcess,
    committed_offsets,
    consume_all,
    create_topics,
    default_keys,
    exact_windows,
    latest_window_stats,
    produce,
    timing_records,
)

pytestmark = pytest.mark.integration

S = 1_000_000_000
M = 60 * S
PARTITIONS = 4


class Pipeline:
    def __init__(self, bootstrap, prefix, tmp_path):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.tmp_path = tmp_path
        self.timings = f"{prefix}.request-timings"
        self.stats = f"{prefix}.window-stats"
        self.dlq = f"{prefix}.request-timings.dlq"
        create_topics(bootstrap, [self.timings, self.stats, self.dlq], PARTITIONS)
        self.env = dict(
            os.environ,
            TOKENPULSE_KAFKA_BOOTSTRAP=bootstrap,
            TOKENPULSE_TOPIC_PREFIX=prefix,
            TOKENPULSE_DATA_DIR=str(tmp_path / "data"),
        )
        self.workers = []

    def worker(self, grace="5s", windows=("1m", "5m/1m")):
        log = self.tmp_path / f"worker-{len(self.workers)}.log"
        proc = WorkerProcess(
            worker_argv(windows=windows, grace=grace, partitions=PARTITIONS, max_event_age=HISTORICAL_MAX_AGE),
            self.env,
            log,
        )
        self.workers.append(proc)
        return proc.start()

    def produce(self, records):
        return produce(self.bootstrap, self.timings, records)

    def wait_for_windows(self, expected, timeout_s=90.0):
        """Read window stats until every expected window's latest emission has the expected count."""

        def done(records):
            latest = latest_window_stats(records)
            return all(key in latest and latest[key].count == count for key, count in expected.items())

        records = consume_all(self.bootstrap, self.stats, until=done, timeout_s=timeout_s)
        return records, latest_window_stats(records)

    def close(self):
        for proc in self.workers:
            proc.stop()

    def logs(self):
        return "\n".join(proc.log_tail() for proc in self.workers)


@pytest.fixture
def pipeline(kafka_bootstrap, topic_prefix, tmp_path):
    p = Pipeline(kafka_bootstrap, topic_prefix, tmp_path)
    yield p
    p.close()


def sentinels(factory, keys, at_ns):
    """One event per key far after the data: its watermark closes every earlier window."""
    return [factory.event(key, at_ns) for key in keys]


def expected_counts(events, specs=(("1m", M, M), ("5m", 5 * M, M))):
    expected, exact = {}, {}
    for label, size, step in specs:
        for (provider, model, workload, region, end), window in exact_windows(events, size, step).items():
            key = (provider, model, workload, region, label, end)
            expected[key] = window.count
            exact[key] = window
    return expected, exact


def within(estimate, values, q):
    import numpy as np

    lower = np.quantile(values, q, method="lower")
    higher = np.quantile(values, q, method="higher")
    return lower * (1 - RELATIVE_ACCURACY) - 1e-9 <= estimate <= higher * (1 + RELATIVE_ACCURACY) + 1e-9


def test_seeded_events_give_exact_counts_and_quantiles_within_sketch_error(pipeline):
    factory = TimingFactory(seed=101)
    keys = default_keys(8)
    events = list(factory.stream(keys, 8_000, interval_ns=S // 20, jitter_ns=2 * S))
    pipeline.produce(timing_records(events + sentinels(factory, keys, DEFAULT_START_NS + 2 * 3600 * S)))
    expected, exact = expected_counts(events)
    pipeline.worker(grace="5s")
    _, latest = pipeline.wait_for_windows(expected)
    missing = {key: count for key, count in expected.items() if key not in latest or latest[key].count != count}
    assert not missing, f"windows missing or inexact: {list(missing.items())[:5]}\n{pipeline.logs()}"
    for key, want in exact.items():
        got = latest[key]
        assert got.error_count == want.error_count
        assert got.prompt_tokens == want.prompt_tokens and got.completion_tokens == want.completion_tokens
        assert got.cost_usd == pytest.approx(want.cost_usd, rel=1e-9)
        assert got.e2e_ms.max == max(want.e2e_ms)
        for q, value in ((0.5, got.e2e_ms.p50), (0.95, got.e2e_ms.p95), (0.99, got.e2e_ms.p99)):
            assert within(value, want.e2e_ms, q), (key, q, value)
        assert within(got.ttft_ms.p95, want.ttft_ms, 0.95)
        assert got.late_events == 0
    assert len(exact) == 8 * (7 + 11)  # 400 s of data: 7 one-minute and 11 five-minute windows per key


def malformed_records(factory, count):
    """``count`` bad records of several kinds, each with a distinct payload."""
    good = orjson.loads(factory.event(TimingKey("sim-bad", "m"), DEFAULT_START_NS).model_dump_json())
    kinds = []
    for i in range(count):
        kind = i % 8
        doc = dict(good, prompt_id=f"bad-{i}")
        if kind == 0:
            raw = b"{not json " + str(i).encode()
        elif kind == 1:
            raw = orjson.dumps([i])
        elif kind == 2:
            raw = orjson.dumps(dict(doc, schema_version=99))
        elif kind == 3:
            raw = orjson.dumps(dict(doc, e2e_ms=-1.0))
        elif kind == 4:
            raw = orjson.dumps(dict(doc, ttft_ms=doc["e2e_ms"] + 1.0))
        elif kind == 5:
            raw = orjson.dumps({k: v for k, v in doc.items() if k != "provider"})
        elif kind == 6:
            raw = orjson.dumps(dict(doc, endpoint="https://user:secret@api.example.com/v1"))
        else:
            raw = orjson.dumps(dict(doc, started_at="2026-11-21T10:00:00"))  # no zone
        kinds.append((b"sim-bad/m", raw))
    return kinds


def test_malformed_events_go_to_the_dlq_with_reasons_and_good_ones_are_all_aggregated(pipeline):
    factory = TimingFactory(seed=202)
    keys = default_keys(4)
    good = list(factory.stream(keys, 10_000, interval_ns=S // 25))
    bad = malformed_records(factory, 1_000)
    records = list(timing_records(good))
    mixed = []
    for i, record in enumerate(records):
        mixed.append(record)
        if i % 10 == 9:
            mixed.append(bad[i // 10])
    mixed += list(timing_records(sentinels(factory, keys, DEFAULT_START_NS + 3600 * S)))
    assert pipeline.produce(mixed) == 11_000 + len(keys)
    expected, _ = expected_counts(good)
    pipeline.worker()
    _, latest = pipeline.wait_for_windows(expected)
    assert all(latest.get(key) is not None and latest[key].count == n for key, n in expected.items()), pipeline.logs()
    assert sum(latest[key].count for key in expected if key[4] == "1m") == 10_000
    dead = consume_all(pipeline.bootstrap, pipeline.dlq, until=lambda r: len(r) >= 1_000, timeout_s=30)
    time.sleep(1.0)
    dead = consume_all(pipeline.bootstrap, pipeline.dlq, until=lambda r: len(r) >= 1_000, timeout_s=30)
    assert len(dead) == 1_000
    assert sorted(r.value or b"" for r in dead) == sorted(value for _, value in bad)
    assert {r.key for r in dead} == {b"sim-bad/m"}
    assert all(r.headers["source-topic"] == pipeline.timings.encode() for r in dead)
    reasons = {r.value: r.headers["error"].decode() for r in dead}
    assert all(reasons.values())
    assert "not JSON" in reasons[bad[0][1]]
    assert "schema_version" in reasons[bad[2][1]]
    assert "e2e_ms" in reasons[bad[3][1]]
    assert "secret" not in " ".join(reasons.values())  # credentials never echoed into a header


def test_duplicates_count_once_late_within_grace_re_emits_beyond_grace_counts_late(pipeline):
    factory = TimingFactory(seed=303, error_rate=0.0)
    key = TimingKey("sim-late", "m")
    t0 = DEFAULT_START_NS
    first = [factory.event(key, t0 + i * S) for i in range(65)]  # window [t0, t0+1m) complete at 64 s
    within_grace = factory.event(key, t0 + 58 * S + S // 2)  # watermark 59 s: still open
    second = [factory.event(key, t0 + i * S) for i in range(65, 100)]  # closes it
    third = [factory.event(key, t0 + i * S) for i in range(100, 400)]
    beyond_1m_grace = factory.event(key, t0 + 30 * S)  # too late for 1m, still inside open 5m windows
    beyond_all = factory.event(key, t0 + 10 * S)  # watermark is past t0+5m by now: late everywhere
    duplicates = first[10:30]  # replays while their pane is open (the 5m windows are): counted once
    stream = [*first, within_grace, *second, *duplicates, beyond_1m_grace, *third, beyond_all]
    stream += sentinels(factory, [key], t0 + 3600 * S)
    pipeline.produce(timing_records(stream))

    counted_1m = [*first, within_grace, *second, *third]
    expected, _ = expected_counts(counted_1m)
    watermark_then = t0 + 99 * S - 5 * S  # when beyond_1m_grace arrives
    for window_key in expected:
        end = window_key[5]
        if window_key[4] == "5m" and end - 5 * M <= t0 + 30 * S < end and end > watermark_then:
            expected[window_key] += 1  # only the 5m windows still open take it
    pipeline.worker(grace="5s")
    records, latest = pipeline.wait_for_windows(expected)
    assert {k: latest[k].count for k in expected if k in latest} == expected, pipeline.logs()

    first_window = ("sim-late", "m", "chat", "eu-west", "1m", t0 + M)
    emissions = [
        decode(WindowStats, r.value).count
        for r in records
        if r.key == b"sim-late/m/chat/1m" and decode(WindowStats, r.value).window_end == t0 + M
    ]
    assert emissions == [65 - 5, 61], "complete at 64 s with 60 events, then closed with the late one"
    assert latest[first_window].count == 61
    assert sum(s.late_events for k, s in latest.items() if k[4] == "1m") == 2
    assert sum(s.late_events for k, s in latest.items() if k[4] == "5m") == 1


def test_sigkilled_worker_restarts_and_every_window_is_exact(pipeline):
    factory = TimingFactory(seed=404)
    keys = default_keys(8)
    events = list(factory.stream(keys, 40_000, interval_ns=S // 50, jitter_ns=S))
    events += events[5_000:5_500]  # producer retries, counted once
    tail = sentinels(factory, keys, DEFAULT_START_NS + 3600 * S)
    expected, _ = expected_counts(events)
    pipeline.produce(timing_records(events[:20_000]))
    victim = pipeline.worker(grace="5s")
    seen = consume_all(pipeline.bootstrap, pipeline.stats, until=lambda r: len(r) >= 40, timeout_s=60)
    assert len(seen) >= 40, pipeline.logs()
    # Kill only once every partition has committed progress: from then on its acked events are never
    # replayed, so an exact count after the restart needs its state restored from the changelog.
    group = f"{pipeline.prefix}-worker"
    deadline = time.monotonic() + 60
    while min(committed_offsets(pipeline.bootstrap, group, pipeline.timings).values()) == 0:
        assert time.monotonic() < deadline, pipeline.logs()
        time.sleep(0.2)
    committed = committed_offsets(pipeline.bootstrap, group, pipeline.timings)
    victim.kill()
    killed_at = time.monotonic()
    pipeline.produce(timing_records(events[20_000:] + tail))
    pipeline.worker(grace="5s")

    def resumed(records):
        return len(records) > len(seen_after_kill)

    seen_after_kill = consume_all(pipeline.bootstrap, pipeline.stats, until=lambda r: False, timeout_s=1)
    consume_all(pipeline.bootstrap, pipeline.stats, until=resumed, timeout_s=60)
    resume_s = time.monotonic() - killed_at
    _, latest = pipeline.wait_for_windows(expected, timeout_s=120)
    wrong = {
        k: (latest[k].count if k in latest else None, n)
        for k, n in expected.items()
        if k not in latest or latest[k].count != n
    }
    assert not wrong, f"{len(wrong)} windows wrong, e.g. {list(wrong.items())[:5]}\n{pipeline.logs()}"
    restarted_log = pipeline.workers[1].log_path.read_text(errors="replace")
    for partition, offset in committed.items():
        # the restart rebuilt this partition from its changelog: it knows the last offset applied before
        # the kill (at or after the committed one), so it did not start from nothing
        restored = [line for line in restarted_log.splitlines() if f"partition {partition}: restored" in line]
        assert restored, restarted_log[-3000:]
        assert int(restored[0].rsplit("last offset ", 1)[1].split()[0]) >= offset - 1, restored[0]
    print(f"committed before the kill {committed}")
    print(f"windows resumed {resume_s:.1f} s after SIGKILL")  # a figure, not an assertion (bench/ measures it)


def test_two_workers_split_the_partitions_and_emit_the_same_windows_as_one(pipeline):
    factory = TimingFactory(seed=505)
    keys = default_keys(12)
    events = list(factory.stream(keys, 12_000, interval_ns=S // 40, jitter_ns=S))
    pipeline.produce(timing_records(events + sentinels(factory, keys, DEFAULT_START_NS + 3600 * S)))
    expected, exact = expected_counts(events)
    pipeline.worker(grace="5s")
    pipeline.worker(grace="5s")
    _, latest = pipeline.wait_for_windows(expected)
    wrong = [key for key, count in expected.items() if key not in latest or latest[key].count != count]
    assert not wrong, f"{len(wrong)} windows wrong\n{pipeline.logs()}"
    # and the content equals what one worker computes from the same partitions (the pure engine here)
    from tokenpulse.streams.engine import PartitionWindows, WindowConfig

    reference = PartitionWindows(0, WindowConfig.parse(["1m", "5m/1m"], "5s"))
    for offset, event in enumerate(events + sentinels(factory, keys, DEFAULT_START_NS + 3600 * S)):
        reference.handle(offset, event)
    one = latest_window_stats_from(reference.take_emitted())
    for key in expected:
        assert latest[key].count == one[key].count
        assert latest[key].e2e_ms.max == one[key].e2e_ms.max
        assert latest[key].cost_usd == pytest.approx(one[key].cost_usd, rel=1e-9)
    assert len(exact) == len(expected)


def latest_window_stats_from(emitted):
    return {(s.provider, s.model, s.workload, s.region, s.window, s.window_end): s for s in emitted}

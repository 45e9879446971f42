"""The monitor's pieces that need no services: workload files, reload decisions, the broker watch."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import yaml

from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.monitor import BrokerWatch, Monitor, workload_files
from tokenpulse.producers.publisher import PublishStats
from tokenpulse.schemas import RequestTiming


class Events:
    def __init__(self) -> None:
        self.events: list[RequestTiming] = []

    def publish(self, event: RequestTiming) -> None:
        self.events.append(event)


def document(name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "endpoints": [{"name": "e", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
        "prompts": {"inline": ["hi"]},
        "schedule": {"kind": "periodic", "every": "1h"},
        **extra,
    }


def test_workload_files_from_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x")
    (tmp_path / "b.yml").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in workload_files([tmp_path])] == ["a.yaml", "b.yml"]
    with pytest.raises(WorkloadError, match="no such file or directory"):
        workload_files([tmp_path / "missing.yaml"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkloadError, match="no workload files"):
        workload_files([tmp_path / "empty"])


def test_load_rejects_two_files_with_one_workload_name_and_a_missing_key(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(document("same")))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(document("same")))
    with pytest.raises(WorkloadError, match="also used by"):
        Monitor([tmp_path], Events(), environ={}).load()
    keyed = document("keyed")
    keyed["endpoints"] = [{**keyed["endpoints"][0], "api_key_env": "NOPE_KEY"}]  # type: ignore[index]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(keyed))
    with pytest.raises(WorkloadError, match="NOPE_KEY is not set"):
        Monitor([tmp_path], Events(), environ={}).load()


def test_reload_restarts_changed_keeps_invalid_and_stops_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(document("a")))
    b.write_text(yaml.safe_dump(document("b")))

    async def main() -> list[list[str]]:
        monitor = Monitor([tmp_path], Events(), environ={}, drain_timeout_s=5)
        task = asyncio.create_task(monitor.run(install_signals=False))
        await asyncio.sleep(0.1)
        seen = [sorted(s.workload for s in monitor.summaries())]
        runs_before = {s.workload: s for s in monitor.summaries()}
        a.write_text(yaml.safe_dump(document("a", tags={"rev": "2"})))
        b.write_text("name: b\nschedule: {kind: never}\n")
        monitor.reload()
        after = {s.workload: s for s in monitor.summaries()}
        assert after["a"] is not runs_before["a"]  # changed: restarted
        assert after["b"] is runs_before["b"]  # invalid: kept as it was
        assert monitor.health()[1]["reload_errors"] == 1
        b.unlink()
        monitor.reload()
        seen.append(sorted(s.workload for s in monitor.summaries()))
        monitor.stop()
        await asyncio.wait_for(task, 10)
        return seen

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main()) == [["a", "b"], ["a"]]
    assert any(str(b) in r.getMessage() and "keeping workload 'b'" in r.getMessage() for r in caplog.records)


def test_broker_watch_says_once_when_kafka_goes_and_once_when_it_is_back(caplog: pytest.LogCaptureFixture) -> None:
    stats = [PublishStats(published=10, delivered=10)]
    watch = BrokerWatch(lambda: stats[-1], "k:9092")
    for spooled in range(1, 6):  # five checks while the broker is away
        stats.append(PublishStats(published=10 + spooled, delivered=10, spooled=spooled))
        with caplog.at_level(logging.WARNING):
            watch.check()
    stats.append(PublishStats(published=16, delivered=16, spooled=5, replayed=5))
    with caplog.at_level(logging.WARNING):
        watch.check()
        watch.check()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "is away" in lines[0] and "is back" in lines[1]


@pytest.mark.parametrize("folder", ["monitor", "monitor/compose"])
def test_example_monitor_workloads_are_valid(folder: str) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / folder
    loaded = Monitor([examples], Events(), environ={}).load()
    assert {w.schedule.kind for w in loaded.values()} == {"periodic", "open"}


def test_broker_watch_notices_a_broker_that_stopped_acknowledging(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    stats = [PublishStats(published=5, delivered=5)]
    watch = BrokerWatch(lambda: stats[-1], "k:9092", stall_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for second in range(1, 12):  # events keep coming, no acknowledgement, nothing spooled yet
            now[0] = float(second)
            stats.append(PublishStats(published=5 + second, delivered=5))
            watch.check()
        assert watch.away
        stats.append(PublishStats(published=17, delivered=17))
        watch.check()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "is away: 10 events wait" in lines[0] and "is back" in lines[1]

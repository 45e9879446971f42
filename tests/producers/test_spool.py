"""The durable spool: append, replay in order, commit, truncate, survive a reopen and a torn tail."""

from __future__ import annotations

from pathlib import Path

from tokenpulse.producers.spool import Spool


def test_append_read_commit_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    for i in range(5):
        spool.append("topic", b"k/m", f'{{"n": {i}}}'.encode())
    records = spool.read_pending(limit=3)
    assert [r.value for r in records] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert records[0].key == b"k/m" and records[0].topic == "topic"
    spool.commit(records[-1].end_offset)
    assert [r.value for r in spool.read_pending()] == [b'{"n": 3}', b'{"n": 4}']
    spool.commit(spool.read_pending()[-1].end_offset)
    assert not spool.has_pending() and (tmp_path / "s.jsonl").stat().st_size == 0
    spool.close()


def test_pending_records_survive_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    spool.append("t", None, b"a")
    spool.append("t", None, b"b")
    spool.commit(spool.read_pending(limit=1)[0].end_offset)
    spool.close()
    reopened = Spool(tmp_path / "s.jsonl")
    assert [(r.key, r.value) for r in reopened.read_pending()] == [(None, b"b")]
    assert reopened.pending_count() == 1


def test_torn_last_line_is_dropped_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    spool.append("t", b"k", b"whole")
    spool.close()
    with open(tmp_path / "s.jsonl", "ab") as handle:
        handle.write(b'{"topic": "t", "key": nu')
    assert [r.value for r in Spool(tmp_path / "s.jsonl").read_pending()] == [b"whole"]

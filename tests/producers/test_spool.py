"""The write-ahead spool: order, deletion of the acked prefix, reopen, lock, size bound, crash safety, modes."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from tokenpulse.producers.spool import Spool, SpoolError, SpoolFullError, SpoolLockedError, record_size


def rows(n: int, start: int = 0) -> list[tuple[str, bytes | None, bytes]]:
    return [("topic", b"k/m", f'{{"n": {i}}}'.encode()) for i in range(start, start + n)]


def test_append_read_in_order_and_delete_the_acked_prefix(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite")
    first = spool.append(rows(5))
    records = spool.read_after(0, limit=3)
    assert [r.value for r in records] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert records[0].seq == first and records[0].key == b"k/m" and records[0].topic == "topic"
    assert spool.read_after(records[-1].seq) == spool.read_after(0)[3:]  # a cursor, nothing re-read
    spool.delete_through(records[-1].seq, 3, sum(r.size for r in records))
    assert [r.value for r in spool.read_after(0)] == [b'{"n": 3}', b'{"n": 4}']
    assert spool.pending_count() == 2 and spool.pending_bytes() == 2 * record_size("topic", b"k/m", b'{"n": 3}')
    spool.close()


def test_pending_records_survive_a_reopen_and_seq_keeps_growing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite")
    spool.append([("t", None, b"a"), ("t", None, b"b")])
    a = spool.read_after(0, 1)[0]
    spool.delete_through(a.seq, 1, a.size)
    spool.close()
    reopened = Spool(tmp_path / "s.sqlite")
    assert [(r.key, r.value) for r in reopened.read_after(0)] == [(None, b"b")]
    assert reopened.pending_count() == 1 and reopened.pending_bytes() == record_size("t", None, b"b")
    assert reopened.append([("t", None, b"c")]) > reopened.last_seq() - 1 > a.seq
    reopened.close()


def test_a_second_process_with_the_same_spool_gets_a_clear_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "p.sqlite")
    with pytest.raises(SpoolLockedError, match=r"in use by another probe process \(pid \d+\).*another probe id"):
        Spool(tmp_path / "p.sqlite")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from tokenpulse.producers.spool import Spool; Spool(pathlib.Path(sys.argv[1]))",
            str(tmp_path / "p.sqlite"),
        ],
        capture_output=True,
        text=True,
    )
    assert child.returncode != 0 and "SpoolLockedError" in child.stderr and f"pid {os.getpid()}" in child.stderr
    spool.close()
    Spool(tmp_path / "p.sqlite").close()  # released on close


def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool" / "p.sqlite")
    spool.append(rows(1))
    spool.dead_letter(spool.read_after(0)[0], "test")
    for path in (tmp_path / "spool").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    spool.close()


def test_the_size_bound_refuses_what_does_not_fit_and_frees_on_delete(tmp_path: Path) -> None:
    size = record_size("topic", b"k/m", b'{"n": 0}')
    spool = Spool(tmp_path / "s.sqlite", max_bytes=3 * size)
    for _ in range(3):
        spool.reserve(size)
    spool.append(rows(3), reserved=True)
    with pytest.raises(SpoolFullError, match=r"is full: .* spool_max_bytes=.*raise spool_max_bytes"):
        spool.reserve(size)
    first = spool.read_after(0, 1)[0]
    spool.delete_through(first.seq, 1, first.size)
    spool.reserve(size)
    spool.close()


def test_dead_letter_moves_the_record_out_with_its_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite")
    spool.append(rows(3))
    middle = spool.read_after(0)[1]
    spool.dead_letter(middle, "MessageSizeTooLargeError: too big")
    assert [r.value for r in spool.read_after(0)] == [b'{"n": 0}', b'{"n": 2}']
    (line,) = spool.dead_letter_path.read_bytes().splitlines()
    row = orjson.loads(line)
    assert (
        row["reason"] == "MessageSizeTooLargeError: too big" and row["value"] == '{"n": 1}' and row["seq"] == middle.seq
    )
    spool.close()


def test_a_full_disk_is_an_error_and_keeps_nothing_of_the_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite")
    spool.append(rows(1))
    spool._db.execute("PRAGMA max_page_count = 3")  # SQLite's own "database or disk is full"
    with pytest.raises(SpoolError, match=r"cannot write to the spool .*free space"):
        spool.append([("t", None, b"x" * 100_000)])
    assert spool.pending_count() == 1 and len(spool.read_after(0)) == 1
    spool.close()


def test_an_unwritable_directory_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolError, match=r"cannot open the spool .*writable data directory"):
        Spool(tmp_path / "file" / "spool" / "p.sqlite")


def test_sigkill_at_any_instant_keeps_every_committed_record(tmp_path: Path) -> None:
    # The child prints a seq only after append() returned; every printed seq must be there after SIGKILL.
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from tokenpulse.producers.spool import Spool
        spool = Spool(Path({str(tmp_path / "k.sqlite")!r}))
        i = 0
        while True:
            seq = spool.append([("t", None, b"v%d" % j) for j in range(i, i + 7)])
            sys.stdout.write(f"{{seq + 6}}\\n"); sys.stdout.flush()
            i += 7
        """
    )
    for delay_s in (0.05, 0.2, 0.35):
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        first = child.stdout.readline()  # appending has begun
        time.sleep(delay_s)
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        out = first + out
        confirmed = [int(line) for line in out.split()]
        assert confirmed, "the child wrote nothing"
        spool = Spool(tmp_path / "k.sqlite")
        seqs = [r.seq for r in spool.read_after(0, limit=10_000_000)]
        assert seqs == list(range(1, len(seqs) + 1)) and max(seqs) >= max(confirmed)
        assert sqlite3.connect(tmp_path / "k.sqlite").execute("PRAGMA integrity_check").fetchone() == ("ok",)
        spool.close()


def test_the_undelivered_records_of_the_old_jsonl_spool_are_taken_over(tmp_path: Path) -> None:
    lines = [orjson.dumps({"topic": "t", "key": "k/m", "value": f"v{i}"}) + b"\n" for i in range(3)]
    (tmp_path / "p.jsonl").write_bytes(b"".join(lines) + b'{"topic": "t", "ke')  # a torn tail
    (tmp_path / "p.jsonl.offset").write_text(str(len(lines[0])))  # the first one was delivered
    spool = Spool(tmp_path / "p.sqlite")
    assert [(r.key, r.value) for r in spool.read_after(0)] == [(b"k/m", b"v1"), (b"k/m", b"v2")]
    assert not (tmp_path / "p.jsonl").exists() and (tmp_path / "p.jsonl.imported").exists()
    spool.close()
    assert Spool(tmp_path / "p.sqlite").pending_count() == 2  # imported once

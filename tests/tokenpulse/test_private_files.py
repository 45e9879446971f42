"""Files holding tokens or events are 0600 from the moment they exist, their directories 0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tokenpulse.private_files import open_private, private_dir, write_private
from tokenpulse.producers.spool import Spool


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        directory = private_dir(tmp_path / "a" / "b")
        write_private(directory / "token", "s3cr3t")
        with open_private(directory / "events.jsonl") as handle:
            # Already 0600 while it is being written, not chmod-ed afterwards.
            assert _mode(directory / "events.jsonl") == 0o600
            handle.write(b"{}\n")
    finally:
        os.umask(old)
    assert _mode(directory) == 0o700
    assert (_mode(directory / "token"), (directory / "token").read_text()) == (0o600, "s3cr3t")
    assert not (directory / "token.tmp").exists()


def test_existing_files_and_dirs_are_narrowed(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    (loose / "f").write_text("x")
    (loose / "f").chmod(0o644)
    private_dir(loose)
    open_private(loose / "f").close()
    assert (_mode(loose), _mode(loose / "f")) == (0o700, 0o600)


def test_spool_files_are_private(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir(mode=0o755)
    spool = Spool(tmp_path / "spool" / "probe.sqlite")
    spool.append([("topic", b"k", b"v"), ("topic", b"k", b"w")])
    spool.delete(spool.read_after(0, 1)[0])
    spool.dead_letter(spool.read_after(0, 1)[0], "too large")
    modes = {p.name: _mode(p) for p in (tmp_path / "spool").iterdir()}
    spool.close()
    assert _mode(tmp_path / "spool") == 0o700
    assert modes and set(modes.values()) == {0o600}, modes
    assert {"probe.sqlite", "probe.sqlite.lock", "probe.sqlite.dead-letter.jsonl"} <= set(modes)

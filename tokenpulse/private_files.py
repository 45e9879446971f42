"""Files that hold secrets or events, created owner-only from the start.

``write_text``-then-``chmod`` leaves a window in which the file is world-readable (umask 022 gives 0644);
these helpers pass the mode to ``os.open`` instead, so the file never exists with wider permissions.
Directories are 0700. A file that already exists with wider permissions is narrowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["DIR_MODE", "FILE_MODE", "open_private", "private_dir", "write_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents, all 0700); an existing ``path`` is narrowed to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def open_private(path: Path, *, append: bool = True) -> BinaryIO:
    """A binary file for appending (or, ``append=False``, truncated for writing), created 0600 (narrowed
    if it existed with wider permissions)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "ab" if append else "wb")
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a 0600 temporary file, fsync'd, then renamed)."""
    temp = path.with_name(path.name + ".tmp")
    with open_private(temp, append=False) as handle:
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)

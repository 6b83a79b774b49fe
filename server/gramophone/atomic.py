"""Atomic, durable file writes, and the leftovers of writers that were killed.

A file is written under a temporary name in its own folder, synced to disk, renamed over
the final name and the folder synced, so a crash or ``kill -9`` at any moment leaves the
old file or the new one, never part of one. The temporary name starts with a dot and
carries the writer's PID, so a later start can tell a dead writer's leftover from a live
one's work in progress.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
POSIX = os.name == "posix"
LEFTOVER = re.compile(r"^\..+\.(\d{1,9})\.[a-z0-9_]+\.tmp$")  # .NAME.PID.RANDOM.tmp, as atomic_write names them


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; once the block ends it durably replaces ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        _sync(temporary, os.O_RDWR)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if POSIX:  # the rename is an entry in the folder; Windows has no folder handle to sync
        _sync(path.parent, os.O_RDONLY)


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of writers that died mid-write (their process is gone)."""
    for entry in folder.iterdir():
        match = LEFTOVER.match(entry.name)
        if match and not _alive(int(match.group(1))):
            entry.unlink(missing_ok=True)
            log.info("removed %s, left by a write that did not finish", entry)


def _sync(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists; assumed so where there is no harmless probe (Windows)."""
    if not POSIX:
        return True
    try:
        os.kill(pid, 0)  # signal 0 only asks whether it exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True

"""File locks: ``flock`` on a small file beside what it guards.

The kernel releases an ``flock`` when its process dies, so a killed run never leaves a stale
lock behind; and a lock file is never removed, so two processes always lock the same inode.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


class LockHeld(Exception):
    """A lock taken without waiting is held elsewhere; ``holder`` is what its holder wrote into
    the lock file ("" when nothing)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path}: held by {holder or 'another process'}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, wait: bool = True,
              holder: str | None = None) -> Iterator[None]:
    """Hold an exclusive (or ``shared``) lock on ``path`` for the block.

    With ``wait=False`` a lock held elsewhere raises :class:`LockHeld` at once instead of
    waiting. ``holder`` (e.g. "pid 123 since ...") is written into the file once the lock is
    taken, so whoever is refused can say who holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(handle, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LockHeld(path, handle.read().strip()) from None
        if holder is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(holder)
            handle.flush()
        yield

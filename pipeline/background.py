"""Writes on one thread, in order, at most a few behind the work that makes them.

A stage that computes a block and then writes it can write block N while it computes block
N + 1 (compression leaves the GIL; the computation leaves a core idle part of the time). The
order is kept (one thread), so a progress record written after a block's arrays never runs
ahead of them, and memory is bounded by ``behind`` blocks waiting. A failed write is raised at
the next :meth:`WritesBehind.check` or :meth:`WritesBehind.submit`, not after another block of
work, and never lost: when the work itself fails, a write that failed as well is added to its
error as a note.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any


class WritesBehind:
    """Run writes on one thread, at most ``behind`` waiting; a context manager that waits for
    all of them on exit."""

    def __init__(self, behind: int = 1) -> None:
        self.behind = max(1, behind)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: deque[Future] = deque()

    def check(self) -> None:
        """Raise the error of a write that has already failed."""
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        """Queue ``write(*args)`` after the writes before it, waiting while ``behind`` wait."""
        self.check()
        while len(self._pending) >= self.behind:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(write, *args))

    def __enter__(self) -> WritesBehind:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            while self._pending:
                future = self._pending.popleft()
                if error is None:
                    future.result()
                elif (failed := future.exception()) is not None:
                    error.add_note(f"a write that was running failed as well: {failed!r}")
        finally:
            self._pool.shutdown(wait=True)

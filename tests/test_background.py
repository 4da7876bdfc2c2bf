"""Writes behind the work: in order on one thread, bounded, and a failed write is raised
promptly and never lost."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.background import WritesBehind


def test_writes_run_in_order_on_one_thread_at_most_one_behind():
    done: list[int] = []
    threads: set[int] = set()
    waiting: list[int] = []

    def write(i: int) -> None:
        time.sleep(0.01)
        threads.add(threading.get_ident())
        done.append(i)

    with WritesBehind(1) as writes:
        for i in range(6):
            writes.submit(write, i)
            waiting.append(i + 1 - len(done))  # submitted but not finished
    assert done == list(range(6))
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert max(waiting) <= 2  # the one just queued and at most the one running before


def test_a_failed_write_is_raised_before_more_work():
    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), WritesBehind(1) as writes:
        writes.submit(fail)
        time.sleep(0.05)
        writes.check()
        pytest.fail("check() let a failed write pass")


def test_a_failed_write_is_raised_on_exit():
    with pytest.raises(OSError, match="disk full"), WritesBehind(1) as writes:
        writes.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))


def test_a_write_failing_beside_a_failed_computation_is_kept_as_a_note():
    started = threading.Event()

    def fail() -> None:
        started.wait(5)
        raise OSError("disk full")

    with pytest.raises(ValueError, match="the work") as caught, WritesBehind(1) as writes:
        writes.submit(fail)
        started.set()
        raise ValueError("the work")
    assert any("disk full" in note for note in caught.value.__notes__)

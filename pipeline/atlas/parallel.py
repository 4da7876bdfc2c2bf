"""Worker processes for the render stage: the atlas's images and pages written in parallel.

An atlas is thousands of independent files (tiles and sheets per unit and method, a page per
unit), so the render stage splits it into tasks (a layer's units a thumbnail sheet at a time, a
run of unit pages). :meth:`Workers.map` runs each task as ``function(shared, task)``: the task
writes its own files under the atlas folder and returns a value, and the results come back in
task order, so what the parent builds from them (and so every byte of the atlas) is that of a
serial render, whichever task finishes first.

Workers are started with "spawn": the render process has torch's and zarr's threads running,
and a forked copy of a process with threads can deadlock. A worker imports numpy, Pillow,
pandas, zarr and jinja2, not torch (1-2 s per process, see :func:`_load_display_alone`). The
large read-only input that every task of one map call needs (the run's tables, the atlas
context) is pickled once to a temporary file, which each worker loads once, rather than sent
with every task; the processes' own start-up data stay small, because the parent waits while a
starting process reads them.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


MAX_DEFAULT_WORKERS = 32  # beyond this the pages' shared input costs more than the cores give


def worker_count(setting: int) -> int:
    """Processes for ``[render] workers``: the setting, or with 0 one per CPU core this
    process may use: its affinity, within a container's CPU limit (cgroup v2 ``cpu.max``,
    which the affinity ignores), at most MAX_DEFAULT_WORKERS."""
    if setting > 0:
        return setting
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        cores = counter() or 1
    elif hasattr(os, "sched_getaffinity"):  # what process_cpu_count reads on Linux
        cores = len(os.sched_getaffinity(0)) or 1
    else:
        cores = os.cpu_count() or 1
    return max(1, min(cores, _cgroup_cpus() or cores, MAX_DEFAULT_WORKERS))


def _cgroup_cpus(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The CPUs a cgroup v2 quota allows (rounded up), None without a quota or a cgroup."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


class Workers:
    """Where the atlas's tasks run: ``count`` worker processes, started when a map first needs
    them and kept for the next map; with a count of 1, this process. Use it as a context
    manager, so that the processes end with it.

    ``scratch``: the folder for the shared input's temporary file (default: the system's); the
    render stage gives its staged atlas folder, so that a full disk there names the atlas and
    no file is left outside it."""

    def __init__(self, count: int, scratch: Path | None = None) -> None:
        if count < 1:
            raise ValueError(f"Workers needs at least one process, got {count}")
        self.count = count
        self.scratch = scratch
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self, modules: Sequence[str] = ()) -> None:
        """Start the worker processes now and have them import ``modules``, so that they get
        ready while this process does other work (loading the model); with a count of 1,
        nothing."""
        if self.count > 1:
            pool = self._started()
            for _ in range(self.count):
                pool.submit(_import, tuple(modules))

    def close(self) -> None:
        """End the worker processes (after the tasks they are running)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, function: Callable[[Any, Any], Any], tasks: Sequence[Any], shared: Any,
            done: Callable[[Any], None] | None = None) -> list[Any]:
        """``function(shared, task)`` for every task; the results in the order of ``tasks``.
        ``done(task)`` is called in this process as each task finishes (in any order).

        ``function`` must be a module-level function (a worker imports it by name). When a task
        fails, the tasks not started are cancelled, those running are waited for (so nothing is
        written after this returns) and the error of the first failed task in ``tasks``' order
        is raised, as the worker raised it.
        """
        if self.count == 1 or len(tasks) <= 1:
            results = []
            for task in tasks:
                results.append(function(shared, task))
                if done is not None:
                    done(task)
            return results
        shared_file = _write_shared(shared, self.scratch)
        try:
            futures = [self._started().submit(_run, function, shared_file, task)
                       for task in tasks]
            _collect(futures, tasks, done)
            return [future.result() for future in futures]
        finally:
            os.unlink(shared_file)

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.count, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(os.getpid(),))
        return self._pool


def _collect(futures: list[Future], tasks: Sequence[Any], done: Callable[[Any], None] | None
             ) -> None:
    """Wait for ``futures``, reporting each finished task; on the first error (or an interrupt
    of this process) cancel what has not started, wait for what runs, and raise."""
    pending = set(futures)
    index = {future: i for i, future in enumerate(futures)}
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            if any(future.exception() is not None for future in finished):
                break
            if done is not None:
                for future in sorted(finished, key=index.__getitem__):
                    done(tasks[index[future]])
    finally:
        for future in pending:
            future.cancel()
        wait(futures)  # the running tasks end before the caller cleans up after an error
    raised = [future.exception() for future in futures if not future.cancelled()]
    failed = [error for error in raised if error is not None]
    if failed:
        raise failed[0]


def _write_shared(shared: Any, folder: Path | None) -> str:
    """Pickle ``shared`` once for every worker, into ``folder``; the temporary file's path,
    never that of an earlier call (workers keep the input by path)."""
    handle, path = tempfile.mkstemp(prefix=f".render-shared-{uuid.uuid4().hex}-",
                                    suffix=".pickle", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            pickle.dump(shared, file, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as error:
        os.unlink(path)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = path  # a failed write() names no file
        raise
    return path


# A worker's copy of the shared input of the current map call, loaded by its first task of the
# call (worker processes only; one input at a time, so memory holds one).
_shared: dict[str, Any] = {}


def _run(function: Callable[[Any, Any], Any], shared_file: str, task: Any) -> Any:
    """Worker side of :meth:`Workers.map`: one task, with the call's shared input."""
    if shared_file not in _shared:
        _shared.clear()
        with open(shared_file, "rb") as file:
            _shared[shared_file] = pickle.load(file)
    return function(_shared[shared_file], task)


def _import(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


def _start_worker(parent: int) -> None:
    """Initialise a worker process: Ctrl-C is the parent's to handle (it cancels the tasks and
    waits for the running ones); the worker ends with its parent; no torch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _load_display_alone()


def _die_with_parent(parent: int) -> None:
    """A worker outlives a killed parent (SIGKILL, out of memory) and would go on running the
    queued tasks, writing into an atlas folder that the rerun has started again; on Linux the
    kernel kills it with the parent."""
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no prctl: not Linux
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _load_display_alone() -> None:
    """Import :mod:`pipeline.interp.display` (numpy only) without ``pipeline.interp``'s
    ``__init__``, which imports torch: 1-2 s of every worker's start, for nothing, as a worker
    needs only ``to_display``. Later imports of the module find it in ``sys.modules``."""
    name = "pipeline.interp.display"
    if name in sys.modules or "pipeline.interp" in sys.modules:
        return
    path = Path(__file__).resolve().parents[1] / "interp" / "display.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise

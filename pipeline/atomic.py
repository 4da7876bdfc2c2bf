"""Writing outputs so that neither a reader nor a failed write leaves a half-written file or
folder behind: files through a temporary name, folders moved into place, zarr's writes settled."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


#: The temporary name zarr's local store writes a chunk under before renaming it into place
#: (``0.<32 hex digits>.partial``): a write killed in between leaves it behind.
_ZARR_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def remove_partials(folder: Path) -> int:
    """Delete what killed zarr writes left inside the store at ``folder`` (their temporary
    files); return how many. A resumed store rewrites those chunks, so nothing is lost, and a
    finished store then holds its arrays' files and nothing else."""
    removed = 0
    if not folder.is_dir():
        return removed
    for root, _, files in os.walk(folder):
        for name in files:
            if _ZARR_PARTIAL.search(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
                removed += 1
    return removed


def replace(staged: Path, final: Path) -> None:
    """Move ``staged`` to ``final``, replacing what was there.

    Files use one atomic ``os.replace``. A folder cannot replace a non-empty folder atomically,
    so the old one is first renamed aside; a crash between the two renames leaves ``final``
    missing (never half-written), and the stage's stamp is absent in that window anyway.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if staged.is_dir() and final.exists():
        old = final.parent / f".{final.name}.old"
        remove(old)
        os.replace(final, old)
        os.replace(staged, final)
        remove(old)
    else:
        os.replace(staged, final)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[BinaryIO]:
    """Open a binary file that appears at ``path`` whole, or not at all.

    The block writes to a temporary name beside ``path`` that is renamed over it when the block
    ends, so an interrupted run never leaves a truncated file that a later resume would take as
    done. The name is unique, so two writers of one path never share it (the last rename wins).
    Not ``mkstemp``: its 0600 mode would survive the rename and hide the file from a web server.
    Plain Python file I/O, so a full disk raises the kernel's own OSError (ENOSPC), which the
    runner reports as one line, naming ``path``; the temporary file is removed when the write
    fails, so a full disk leaves nothing half-written behind (not even under the temporary name).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a failed write() names no file
        raise


def write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through :func:`writing`."""
    with writing(path) as handle:
        handle.write(data)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON through a temporary file and an atomic rename."""
    write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def read_json(path: Path) -> Any:
    """Read a JSON file, or return None if it is missing or unreadable (e.g. cut off)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def zarr_writes_settled() -> Iterator[None]:
    """When the block raises, wait for zarr's writes still running before the error goes on.

    zarr writes an array's chunks as concurrent tasks on its own event loop and raises the first
    failure (a full disk, say) at once, leaving the other tasks running: they would go on
    writing into the store while the error is reported, and at exit each one still pending
    prints "Task was destroyed but it is pending!" under the one-line error.
    """
    try:
        yield
    except BaseException:
        _settle_zarr_tasks()
        raise


def _settle_zarr_tasks(timeout: float = 60.0) -> None:
    import asyncio

    from zarr.core.sync import sync

    async def settle() -> None:
        this = asyncio.current_task()
        while others := [task for task in asyncio.all_tasks() if task is not this]:
            await asyncio.gather(*others, return_exceptions=True)  # their errors: the same cause

    with contextlib.suppress(Exception):  # best effort: never hide the error being raised
        sync(settle(), timeout=timeout)

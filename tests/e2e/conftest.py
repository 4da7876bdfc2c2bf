"""Fixtures of the end-to-end tests: a small filesystem that a test fills before a command."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO, cli_argv

# The reduced demo's outputs take about 120 MB on disk (mostly projections.zarr's small chunk
# files); the rest is room for the staged copies a failed stage leaves until its rerun.
TMPFS_SIZE = "256m"
# Set to "rlimit" to run the fallback on a machine that could mount a tmpfs.
FORCE_ENV = "DECONV_ATLAS_SMALL_FS"


class SmallFilesystem:
    """A folder in which a test decides how much the next command may write.

    ``kind == "tmpfs"``: the folder is a real tmpfs mount; :meth:`leave` fills it with a ballast
    file up to ``room`` free bytes, so every writer (pyarrow, zarr, PIL, torch, json) gets ENOSPC
    from the kernel, as on a full disk.

    ``kind == "rlimit"`` (no mount possible, e.g. not root): a plain folder; :meth:`leave` makes
    the next command run with ``RLIMIT_FSIZE`` = ``room`` and SIGXFSZ ignored, so a write that
    takes any file past ``room`` bytes fails with EFBIG from the kernel, again for every writer
    alike. A per-file cap, not a full disk: what "room" means differs (each file may use it), but
    the path the error takes through the libraries and the pipeline is the same. A write wrapper
    in Python would miss the writes made in C (pyarrow, PIL, zarr's codecs, torch), which are the
    ones that matter here.
    """

    def __init__(self, root: Path, kind: str) -> None:
        self.root, self.kind = root, kind
        self.cause = os.strerror(errno.ENOSPC if kind == "tmpfs" else errno.EFBIG)
        self._room: int | None = None
        self._ballast = root / ".ballast"

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still add to the filesystem."""
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def leave(self, room: int) -> None:
        """Let the next command write only about ``room`` bytes (see the class doc)."""
        self.free()
        if self.kind == "rlimit":
            self._room = room
            return
        size = self.free_bytes() - room
        assert size > 0, f"the filesystem has only {self.free_bytes()} bytes free"
        handle = os.open(self._ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(handle, 0, size)
        finally:
            os.close(handle)
        assert abs(self.free_bytes() - room) <= 2 * os.statvfs(self.root).f_frsize

    def free(self) -> None:
        """Give all the room back."""
        self._room = None
        self._ballast.unlink(missing_ok=True)

    def run_cli(self, *args: str, cwd: Path, env: dict | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
        """``python -m pipeline ARGS`` in ``cwd`` under the room set by :meth:`leave` (its
        workflow's devices pinned, as support.run_cli checks)."""
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        return subprocess.run(cli_argv(*args, cwd=cwd), cwd=cwd,
                              env=environment, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=None if self._room is None else self._limit)

    def _limit(self) -> None:  # runs in the child, between fork and exec
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death; kept over exec
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        room = self._room if hard == resource.RLIM_INFINITY else min(self._room, hard)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))


def _mount_tmpfs(folder: Path) -> bool:
    if os.environ.get(FORCE_ENV) == "rlimit" or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755",
                             "deconv-atlas-test", str(folder)], capture_output=True, text=True)
    return result.returncode == 0


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # busy: detach


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[SmallFilesystem]:
    """A :class:`SmallFilesystem`: a tmpfs of ``TMPFS_SIZE`` when this process may mount one
    (root), else a folder whose commands run under ``RLIMIT_FSIZE``; skipped where neither
    exists (no POSIX resource limits)."""
    folder = tmp_path / "small-fs"
    folder.mkdir()
    if _mount_tmpfs(folder):
        filesystem = SmallFilesystem(folder, "tmpfs")
        try:
            yield filesystem
        finally:
            filesystem.free()
            _unmount(folder)
        return
    try:
        import resource
        import signal

        resource.getrlimit(resource.RLIMIT_FSIZE)
        signal.SIGXFSZ  # noqa: B018 - only checking that it exists
    except (ImportError, AttributeError):
        pytest.skip("neither a tmpfs mount nor RLIMIT_FSIZE is available here")
    yield SmallFilesystem(folder, "rlimit")

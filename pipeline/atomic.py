"""Moving finished outputs into place so a reader never sees a half-written file or folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file, or return None if it is missing or unreadable (e.g. cut off)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None

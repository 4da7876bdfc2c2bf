"""What makes a stage done: its key, and the content digest of what it wrote.

A stage's *key* is a hash of

- the config values that can change its results (its ``keys``: whole sections or single
  options, less the options marked ``execution=True``),
- the *content digests* of its input stages' outputs, not a per-run token: a stage rerun that
  writes byte-identical outputs leaves everything downstream done,
- the content digest of the weights file it loads, when ``[model] checkpoint`` names one,
- for the stages that build the model, the content digest of the file defining
  ``[model] factory`` when one is named (editing it reruns them, touching it does not),
- for the stage that lists the images (prepare), a digest of the image folders' listing (each
  sub-folder's name, each image file's name, size and modification time): adding an image or
  filling an empty class folder makes it rerun, and when the manifest it writes is the same,
  nothing else does;
- for the stages that read the images (train, activations, deconv), the same for exactly the
  files of their manifests: an image replaced under its own name, or a broken link repaired,
  makes them rerun;
- the stage's revision, bumped only by a release that changes what the stage writes.

Which of these a stage's key holds follows from what it declares it reads
(``register_stage(reads=...)``, :mod:`pipeline.catalog`). Its stamp records the key and the
digest of its outputs, written after they are in place. Stamps of release 0.3.0 (keyed by
per-run tokens) are no longer read: their stages are stale, and the runner says so once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.config import Workflow
from pipeline.layout import RunLayout

#: The last release whose stamps are keyed by tokens (no longer read).
LEGACY_VERSION = "0.3.0"


def config_values(workflow: Workflow, keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` ('section' or 'section.option'), execution-only options left out;
    an option renamed since (``formerly``) under its old name, so its stages keep their keys."""
    values = {}
    for key in keys:
        section, _, name = key.partition(".")
        value = workflow.section(section)
        if name:
            formerly = _field(value, name).metadata.get("formerly")
            values[f"{section}.{formerly}" if formerly else key] = _results_only(
                getattr(value, name))
        else:
            values[key] = _results_only(value)
    return values


def _field(section: Any, name: str) -> dataclasses.Field:
    return next(spec for spec in dataclasses.fields(section) if spec.name == name)


def _results_only(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if not dataclasses.is_dataclass(value):
        return value
    return {spec.metadata.get("formerly") or spec.name: _results_only(getattr(value, spec.name))
            for spec in dataclasses.fields(value)
            if not spec.metadata.get("execution")
            and (not spec.metadata.get("internal") or spec.metadata.get("keyed"))
            and not (spec.metadata.get("since") and getattr(value, spec.name) == _default(spec))}


def _default(spec: dataclasses.Field) -> Any:
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def stage_key(config: dict[str, Any], inputs: dict[str, str], revision: int,
              external: dict[str, str | None]) -> str:
    """The hash of everything that decides a stage's outputs (see the module doc); ``external``
    holds the digests of what it reads from outside the run (weights, image folders)."""
    payload = {"config": config, "inputs": inputs, "revision": revision, **external}
    return _hash(payload)


def folder_listing_digest(folders: Iterable[Path], depth: int | None = None) -> str | None:
    """A digest of the image folders as the prepare stage scans them: every sub-folder's name and
    every image file's name, size and modification time (no file is opened). Links are followed
    (a linked class folder counts; a loop does not recurse). ``depth`` limits how deep it goes.
    None if a folder is missing (an unmounted disk is not a changed data set)."""
    from pipeline.data.images import IMAGE_EXTENSIONS

    digest = hashlib.sha256()
    for folder in folders:
        if not folder.is_dir():
            return None
        digest.update(str(folder).encode() + b"\1")
        seen: set[tuple[int, int]] = set()
        for root, dirs, files in os.walk(folder, followlinks=True):
            here = Path(root)
            info = here.stat()
            level = len(here.relative_to(folder).parts)
            if (info.st_dev, info.st_ino) in seen or (depth is not None and level >= depth):
                dirs.clear()
            seen.add((info.st_dev, info.st_ino))
            dirs.sort()
            for name in dirs:
                digest.update(f"{(here / name).relative_to(folder).as_posix()}/\n".encode())
            images = sorted(name for name in files if Path(name).suffix.lower()
                            in IMAGE_EXTENSIONS)
            digest.update(files_digest(here, images, folder).encode())
    return digest.hexdigest()


def files_digest(root: Path, names: Iterable[str], relative_to: Path | None = None) -> str:
    """A digest of the files ``root/name``: each name, size and modification time, following
    links (a link whose target is missing or replaced counts as changed)."""
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        try:
            info = path.stat()
        except OSError:
            info = None
        shown = path.relative_to(relative_to).as_posix() if relative_to else name
        stat = f"{info.st_size}\0{info.st_mtime_ns}" if info else "unreadable"
        digest.update(f"{shown}\0{stat}\n".encode())
    return digest.hexdigest()


def external_digest(what: str, stage: str, workflow: Workflow, layout: RunLayout,
                    listed: dict | None = None) -> str | None:
    """The digest of what ``stage`` reads from outside the run folder: ``weights`` (the content
    of ``[model] checkpoint``), ``model_file`` (the file defining ``[model] factory``),
    ``checkpoints`` (those of ``[evolution] checkpoints``),
    ``listing`` (the image folders, as prepare scans them) or ``images`` (the files the stage's
    manifests list). None when a data folder or manifest is not there now; "" when there is
    nothing outside to read. ``listed`` keeps the digest of each manifest's files across calls
    (see :func:`listed_files_digest`)."""
    from pipeline.run_inputs import analysed_root, train_root

    if what == "model_file":  # [model] factory: the content of the file defining it
        from pipeline.models.factory import factory_digest

        return factory_digest(workflow.model.factory)
    if what == "weights":
        checkpoint = workflow.model.checkpoint
        return file_digest(Path(checkpoint).expanduser()) if checkpoint else ""
    if what == "checkpoints":  # [evolution] checkpoints: each file's content, in order
        digests = [file_digest(Path(path).expanduser()) for path in workflow.evolution.checkpoints]
        return None if None in digests else _hash(digests)
    if workflow.data.source == "synthetic":
        return ""  # the images are the prepare stage's own output, in its digest
    read = [(analysed_root(workflow, layout), layout.manifest)]
    if workflow.train.enabled and (what == "listing" or stage == "train"):
        read.append((train_root(workflow, layout), layout.train_manifest))
    if what == "listing":  # ImageNet's own layouts lie at most two levels down
        return folder_listing_digest([folder for folder, _ in read],
                                     2 if workflow.data.source == "imagenet" else None)
    parts = []
    for folder, manifest in read:
        if not folder.is_dir() or not manifest.exists():
            return None
        parts.append(listed_files_digest(folder, manifest, {} if listed is None else listed))
    return "".join(parts)


def listed_files_digest(folder: Path, manifest: Path, known: dict) -> str:
    """:func:`files_digest` of the files under ``folder`` that ``manifest`` lists, kept in
    ``known`` per version of the manifest (its inode, size and modification time: the manifest
    is replaced whole when prepare writes it). A run asks for it after every stage, for every
    stage that reads images; at 5,000 images each answer stats them all (50 ms), and only
    prepare changes the list. An image that changes during the run is seen by the next run: a
    stamp then records the digest from before, so that stage is stale, never wrongly done."""
    import pandas as pd

    info = manifest.stat()
    key = (str(folder), str(manifest), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in known:
        known[key] = files_digest(folder, pd.read_parquet(manifest, columns=["path"])["path"])
    return known[key]


def content_digest(paths: Iterable[Path], base: Path) -> tuple[str, list[str]]:
    """(digest, names) of the files and folder trees among ``paths`` that exist: each file's
    name relative to ``base`` and its bytes, in sorted order."""
    digest = hashlib.sha256()
    names = []
    for path in paths:
        if not path.exists():
            continue
        names.append(path.relative_to(base).as_posix())
        for file in _files(path):
            digest.update(file.relative_to(base).as_posix().encode() + b"\0")
            with open(file, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest(), names


def file_digest(path: Path) -> str | None:
    """The sha256 of one file's bytes, or None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    found: list[Path] = []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(Path(folder) / name for name in sorted(files))
    return found


def is_legacy(stamp: dict | None) -> bool:
    """A stamp written by release 0.3.0 (a token, no digest)."""
    if not stamp:
        return False
    return "digest" not in stamp and stamp.get("version") == LEGACY_VERSION


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

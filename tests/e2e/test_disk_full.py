"""A full disk in any writing stage: one line, exit status 1, no stamp; the rerun after space is
freed completes, and every output equals that of an uninterrupted run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from support import TINY_DEMO, store_arrays

from pipeline.atomic import read_json
from pipeline.layout import RunLayout
from pipeline.stages import list_stages

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

STAGES = [stage.name for stage in list_stages()]  # the reduced demo runs every stage
WORKFLOW = ("-w", "workflows/tiny.toml")
QUIET = {"TQDM_DISABLE": "1"}  # progress bars off: the one-line error is all stderr may hold
# Files of the run folder that record how it ran, not what it computed.
BOOKKEEPING = {"pipeline.log", ".lock", ".commit-lock"}


def _outputs(layout: RunLayout, stage: str) -> list[Path]:
    """Everything ``stage`` writes (DESIGN.md's table)."""
    return {
        "prepare": [layout.synthetic_data, layout.manifest, layout.train_manifest, layout.classes],
        "train": [layout.checkpoints, layout.snapshots, layout.model, layout.metrics],
        "activations": [layout.activations, layout.skipped],
        "rank": [layout.topk, layout.units, layout.selectivity, layout.histograms],
        "deconv": [layout.projections],
        "featurevis": [layout.featurevis],
        "occlusion": [layout.occlusion],
        "evolution": [layout.evolution],
        "invariance": [layout.invariance],
        "sanity": [layout.sanity, layout.input_dependence, layout.randomised_projections],
        "render": [layout.report_dir],
    }[stage]


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _footprint(path: Path) -> int:
    """Bytes that a file or a folder tree takes on disk (whole blocks, as tmpfs counts them)."""
    return sum(file.stat().st_blocks * 512 for file in _files(path))


FULL = 8192  # bytes left free on a full disk: two pages of tmpfs
# The share of what a stage writes that its second failing run gets room for: it fails in the
# middle of its work (half-written outputs); activations after some chunks, so that the rerun
# resumes (creating the store, every array's metadata and the coordinates, is about half of the
# tiny run's store: 0.75 leaves room for about half of the chunks); the two slowest stages early
# in their work (deconv inside its first layer), to keep the test short.
ROOM = {"prepare": 0.5, "activations": 0.75, "rank": 0.5, "deconv": 0.02, "featurevis": 0.5,
        "occlusion": 0.5,
        "evolution": 0.5, "invariance": 0.5, "sanity": 0.5, "render": 0.1}


def _rooms(kind: str, reference: RunLayout, stage: str) -> list[int]:
    """The room each failing run of ``stage`` gets, in order: a full disk, then room for part
    of what the stage writes (measured on the reference run's outputs)."""
    if kind == "rlimit":  # a cap per file (see SmallFilesystem): half the stage's largest file
        return [max(_footprint(file) for path in _outputs(reference, stage)
                    for file in _files(path)) // 2]
    if stage == "train":
        # Inside checkpoint 2 (a full disk would stop it inside checkpoint 1, the same case with
        # an epoch less); then, resumed after epoch 1, it writes checkpoint 2 and fails inside
        # snapshot 2 (written before checkpoint 1 goes, whose room would let everything after it
        # fit), so that the rerun resumes after the last epoch, with nothing left to train and
        # that snapshot to write again. Only the newest checkpoint is kept: epoch 2's stands for
        # both (the same tensors).
        checkpoint, snapshot = _footprint(reference.checkpoint(2)), _footprint(
            reference.snapshot(2))
        return [checkpoint + snapshot + checkpoint // 2, checkpoint + snapshot // 2]
    return [FULL, int(ROOM[stage] * sum(_footprint(path) for path in _outputs(reference, stage)))]


def _stamp_bytes(layout: RunLayout) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(layout.stamps.glob("*.json"))}


def _assert_one_line_failure(result, stage: str, cause: str, layout: RunLayout) -> None:
    """Exit status 1 and one line that names the stage, a path of this run and the cause."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    prefix = f"error: [{stage}] failed: "
    assert lines[0].startswith(prefix), lines[0]
    path, _, advice = lines[0].removeprefix(prefix).partition(f": {cause}; ")
    assert advice, lines[0]
    assert any(Path(path).is_relative_to(folder)
               for folder in (layout.run_dir, layout.report_dir.parent)), lines[0]


def _check_attempt(stage: str, attempt: int, result, layout: RunLayout) -> None:
    """What a failed attempt must leave for its rerun (tmpfs plan, see ``_rooms``)."""
    if stage == "train":
        # A checkpoint cut off by the full disk never takes a checkpoint's name.
        done = [f"epoch_{epoch:03d}.pt" for epoch in range(1, attempt + 2)]
        assert sorted(p.name for p in layout.checkpoints.iterdir()) == done
        if attempt == 0:
            assert f" {layout.checkpoint(2)}: " in result.stderr
        else:
            assert "[train] resuming after epoch 1" in result.stdout
            assert f" {layout.snapshot(2)}: " in result.stderr


def _check_rerun(stage: str, result) -> None:
    """The rerun after a mid-stage failure continues from what was finished (tmpfs plan)."""
    if stage == "train":
        assert "[train] resuming after epoch 2" in result.stdout
    if stage == "activations":
        assert "[activations] resuming:" in result.stdout


def test_full_disk_in_each_stage_fails_in_one_line_and_the_rerun_completes(small_filesystem,
                                                                          tiny_run):
    """Stage by stage on a small filesystem: each failing run (a full disk, then room for part
    of the stage's outputs) is one line and leaves the stamps as they were; the rerun with the
    space back completes; at the end everything equals ``tiny_run``, an uninterrupted run."""
    filesystem, base = small_filesystem, small_filesystem.root
    layout, reference = RunLayout(base, "tiny"), RunLayout(tiny_run, "tiny")
    (base / "workflows").mkdir()
    (base / "workflows" / "tiny.toml").write_text(TINY_DEMO, encoding="utf-8")
    for stage in STAGES:
        for attempt, room in enumerate(_rooms(filesystem.kind, reference, stage)):
            stamps = _stamp_bytes(layout)
            filesystem.leave(room)
            result = filesystem.run_cli("run", stage, *WORKFLOW, cwd=base, env=QUIET)
            filesystem.free()
            _assert_one_line_failure(result, stage, filesystem.cause, layout)
            assert not layout.stamp(stage).exists()
            assert _stamp_bytes(layout) == stamps  # the finished stages are untouched
            if filesystem.kind == "tmpfs":
                _check_attempt(stage, attempt, result, layout)
        result = filesystem.run_cli("run", stage, *WORKFLOW, cwd=base, env=QUIET)
        assert result.returncode == 0, result.stderr[-3000:]
        assert layout.stamp(stage).exists()
        if filesystem.kind == "tmpfs":
            _check_rerun(stage, result)
    _assert_same_outputs(layout, reference)


# -- comparing with the uninterrupted run ----------------------------------------------------

def _relative_files(base: Path) -> set[str]:
    return {str(path.relative_to(base)) for path in _files(base)
            if path.name not in BOOKKEEPING and path.name != ".ballast"}


def _store_attributes(path: Path) -> dict[str, dict]:
    """The attributes of every group and array of a zarr store, by key."""
    found = {}

    def visit(group, prefix=""):
        found[prefix] = dict(group.attrs)
        for name, array in group.arrays():
            found[prefix + name] = dict(array.attrs)
        for name, sub in group.groups():
            visit(sub, f"{prefix}{name}/")

    visit(zarr.open_group(path, mode="r"))
    return found


def _assert_same_states(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        if isinstance(value, dict):
            _assert_same_states(value, theirs[key])
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, theirs[key]), key
        else:
            assert value == theirs[key], key


# Two uninterrupted runs differ only there (checked): the index lists each stage's time; the
# date of generation is on every page and differs when the two runs straddle midnight.
_TIMING = re.compile(r'(<tr><th scope="row">[a-z_]+</th><td>)[0-9.]+ s(</td></tr>)')
_DATE = re.compile(r'<time datetime="\d{4}-\d{2}-\d{2}">\d{4}-\d{2}-\d{2}</time>')


def _atlas_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name == "atlas.json":  # the date and the stages' timings, as on the index
        whole = json.loads(data)
        whole.pop("generated", None)
        whole.get("run", {}).pop("stage_seconds", None)
        return json.dumps(whole, sort_keys=True).encode("utf-8")
    if path.suffix != ".html":
        return data
    text = _DATE.sub("<time>DATE</time>", data.decode("utf-8"))
    if path.name == "index.html":
        text = _TIMING.sub(r"\1SECONDS\2", text)
    return text.encode("utf-8")


def _assert_same_outputs(layout: RunLayout, reference: RunLayout) -> None:
    """Every output equals the reference run's: nothing missing, nothing left over."""
    assert _relative_files(layout.base) == _relative_files(reference.base)
    # Upstream first, so a difference is reported where it starts.
    _assert_same_states(torch.load(layout.model, weights_only=True),
                        torch.load(reference.model, weights_only=True))
    for store in (reference.activations, reference.projections, reference.occlusion,
                  reference.evolution):
        ours, theirs = store_arrays(layout.run_dir / store.name), store_arrays(store)
        assert ours.keys() == theirs.keys()
        for key, values in theirs.items():
            np.testing.assert_array_equal(ours[key], values, err_msg=f"{store.name}/{key}")
        assert _store_attributes(layout.run_dir / store.name) == _store_attributes(store)
    for table in sorted(reference.run_dir.glob("*.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(layout.run_dir / table.name),
                                      pd.read_parquet(table), obj=table.name)
    for folder in (reference.checkpoints, reference.snapshots):
        for checkpoint in _files(folder):
            ours = torch.load(layout.run_dir / folder.name / checkpoint.name, weights_only=True)
            theirs = torch.load(checkpoint, weights_only=True)
            _assert_same_states(ours, theirs)  # the stage key too: stamps are by content
    assert read_json(layout.metrics) == read_json(reference.metrics)
    for folder in (layout.synthetic_data, layout.report_dir):
        theirs = reference.base / folder.relative_to(layout.base)
        for file in _files(theirs):
            assert _atlas_bytes(folder / file.relative_to(theirs)) == _atlas_bytes(file), file

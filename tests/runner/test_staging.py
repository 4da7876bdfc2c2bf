"""Outputs are staged under temporary names and moved into place only when complete."""

import errno
import os

import pytest
from support import pin_workflow

from pipeline import catalog
from pipeline.atomic import read_json, replace, write_bytes, write_json, writing
from pipeline.config import ModelConfig, Workflow
from pipeline.layout import RunLayout
from pipeline.stages import get_stage
from pipeline.stages.context import StageContext


def _context(tmp_path, key="k1", stage="rank"):
    workflow = pin_workflow(Workflow(name="w", model=ModelConfig(name="zfnet_small")))
    return StageContext(workflow, RunLayout(tmp_path, "w"), get_stage(stage), key)


def test_folder_replaces_folder_without_leftovers(tmp_path):
    final, staged = tmp_path / "out", tmp_path / ".out.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    replace(staged, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_is_invisible_until_commit(tmp_path):
    context = _context(tmp_path)
    final = context.layout.topk
    staged = context.output(catalog.TOPK)
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text("table")
    assert not final.exists()
    context.commit()
    assert final.read_text() == "table" and not staged.exists()


def test_resumable_output_survives_only_with_the_same_key(tmp_path):
    first = _context(tmp_path, key="same", stage="activations")
    staged = first.output(catalog.ACTIVATIONS)
    staged.mkdir(parents=True)
    (staged / "chunk").write_text("done")
    again = _context(tmp_path, key="same", stage="activations")
    assert (again.output(catalog.ACTIVATIONS) / "chunk").exists()
    changed = _context(tmp_path, key="other", stage="activations")
    assert not changed.output(catalog.ACTIVATIONS).exists()


def test_a_resumed_store_loses_what_killed_chunk_writes_left_and_commits_only_its_files(
        tmp_path):
    """zarr writes a chunk under ``<name>.<hex>.partial`` and renames it: a kill in between
    leaves the temporary file, which neither the resumed store nor the finished one keeps."""
    first = _context(tmp_path, key="same", stage="deconv")
    staged = first.output(catalog.PROJECTIONS)
    (staged / "conv1" / "maps" / "c").mkdir(parents=True)
    (staged / "conv1" / "maps" / "c" / "0").write_bytes(b"chunk")
    left = staged / "conv1" / "maps" / "c" / f"1.{'ab12' * 8}.partial"
    left.write_bytes(b"half a chunk")
    again = _context(tmp_path, key="same", stage="deconv")
    assert again.output(catalog.PROJECTIONS) == staged
    assert (staged / "conv1" / "maps" / "c" / "0").exists() and not left.exists()
    late = staged / f"zarr.{'cd34' * 8}.partial"
    late.write_bytes(b"{")
    again.commit()
    final = tmp_path / "runs" / "w" / "projections.zarr"
    assert sorted(path.name for path in final.rglob("*") if path.is_file()) == ["0"]


def test_a_shard_opening_the_sharded_store_leaves_a_siblings_chunk_write_alone(tmp_path):
    """Shards fill the activations store side by side: one that opens it while another is
    between writing a chunk's temporary file and renaming it must not delete that file (the
    store is cleaned when the last shard commits it)."""
    first = _context(tmp_path, key="same", stage="activations")
    staged = first.output(catalog.ACTIVATIONS)
    (staged / "conv1" / "max" / "c").mkdir(parents=True)
    writing_now = staged / "conv1" / "max" / "c" / f"0.{'ef56' * 8}.partial"
    writing_now.write_bytes(b"a sibling's chunk, half written")
    sibling = _context(tmp_path, key="same", stage="activations")
    assert sibling.output(catalog.ACTIVATIONS) == staged and writing_now.exists()


def test_commit_refuses_a_missing_output(tmp_path):
    context = _context(tmp_path)
    context.output(catalog.UNITS)
    try:
        context.commit()
    except RuntimeError as error:
        assert "units.parquet" in str(error)
    else:
        raise AssertionError("commit accepted a missing output")


def test_json_written_atomically_and_read_back(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    (tmp_path / "cut.json").write_text('{"x": ')
    assert read_json(tmp_path / "cut.json") is None


class _FullDisk:
    """A file that the kernel refuses to grow: every write is ENOSPC, named by no file."""

    def __init__(self, path, mode):
        self._file = open(path, mode)  # noqa: SIM115 - closed in __exit__

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_write_names_its_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    monkeypatch.setattr("pipeline.atomic.open", _FullDisk, raising=False)
    with pytest.raises(OSError) as info:
        write_bytes(target, b"new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left
    assert target.read_bytes() == b"old"


def test_a_block_that_fails_mid_write_leaves_the_old_file_alone(tmp_path):
    """Images (atlas tiles) are written by a library into the open handle of
    :func:`writing`; an error half way leaves the old file and no temporary one."""
    target = tmp_path / "tile.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), writing(target) as handle:
        handle.write(b"half a pic")
        raise RuntimeError("encoder failed")
    assert [p.name for p in tmp_path.iterdir()] == ["tile.png"]
    assert target.read_bytes() == b"old"
    with writing(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1

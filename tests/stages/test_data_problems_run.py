"""A real run over a folder with a broken link and an empty class folder: the link is listed as
skipped, the empty folder is a warning in the run and on the index, and goes once it is fixed."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from support import folder_workflow, pin_device, run_cli, save_random_checkpoint, write_images

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

MESSAGE = "class folder 'empty' has no images"


def _index_text(base: Path) -> str:
    page = (base / "reports" / "tiny" / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_broken_link_is_skipped_and_empty_folder_warned_until_fixed(tmp_path, write_workflow):
    data = tmp_path / "data"
    write_images(data, ["cat", "dog"], per_class=4)
    (data / "cat" / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")
    (data / "empty").mkdir()
    checkpoint = save_random_checkpoint(tmp_path / "model.pt", num_classes=3)
    text = folder_workflow(data, checkpoint, extra="[rank]\ntop_k = 4\n")
    assert "[activations]\n" in text
    # two layers and top 4 keep the deconv stage short: this test is about the data
    text = text.replace("[activations]\n", '[activations]\nmodules = ["features.relu1", '
                        '"features.relu2"]\n')
    workflow = str(write_workflow(text))
    run, report = tmp_path / "runs" / "tiny", tmp_path / "reports" / "tiny"

    first = run_cli("run", "all", "-w", workflow, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"[prepare] warning: {MESSAGE}" in first.stdout.splitlines()

    manifest = pd.read_parquet(run / "manifest.parquet")
    assert "cat/gone.jpg" in set(manifest["path"])
    skipped = pd.read_parquet(run / "skipped.parquet")
    assert skipped["path"].tolist() == ["cat/gone.jpg"]
    reason = skipped["reason"].iloc[0]
    assert "broken symbolic link" in reason and "cat/gone.jpg" in reason
    assert str(tmp_path) not in reason and "\n" not in reason

    assert json.loads((run / "data_warnings.json").read_text()) == {"warnings": [
        {"kind": "empty_folder", "folder": "empty", "message": MESSAGE}]}
    text = _index_text(tmp_path)
    assert "Check the data folder" in text and MESSAGE in text
    assert "cat/gone.jpg" in text  # in the skipped images' list
    assert str(tmp_path) not in (report / "index.html").read_text(encoding="utf-8")

    write_images(data, ["empty"], per_class=1, seed=5)  # the user fixes the folder...
    fixed = run_cli("run", "all", "-w", workflow, cwd=tmp_path)  # ...and just runs again
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "[prepare] running" in fixed.stdout and "warning" not in fixed.stdout
    assert not (run / "data_warnings.json").exists()
    assert "[render] up to date" not in fixed.stdout  # the atlas was rebuilt
    text = _index_text(tmp_path)
    assert "Check the data folder" not in text and MESSAGE not in text
    assert "empty/empty_0000.JPEG" in set(pd.read_parquet(run / "manifest.parquet")["path"])
    (tmp_path / "moved-away.jpg").write_bytes((data / "cat" / "cat_0000.JPEG").read_bytes())
    relinked = run_cli("run", "all", "-w", workflow, cwd=tmp_path)  # the link works again
    assert relinked.returncode == 0, relinked.stderr[-3000:]
    assert "[activations] running" in relinked.stdout
    assert pd.read_parquet(run / "skipped.parquet").empty


def test_training_leaves_unreadable_images_out(tmp_path, write_workflow):
    """A broken link among the training images costs that image, not the run."""
    train, val = tmp_path / "train", tmp_path / "val"
    write_images(train, ["cat", "dog"], per_class=4)
    write_images(val, ["cat", "dog"], per_class=2, seed=1)
    (train / "dog" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    workflow = write_workflow(pin_device(f"""
[data]
source = "imagefolder"
root = "{val}"
train_root = "{train}"
[model]
name = "zfnet_small"
image_size = 48
[train]
enabled = true
epochs = 1
batch_size = 4
[activations]
modules = ["features.relu1"]
[rank]
top_k = 2
"""))
    result = run_cli("run", "all", "-w", str(workflow), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[train] warning: 1 unreadable images left out of training" in result.stdout
    assert "dog/gone.jpg" in result.stdout

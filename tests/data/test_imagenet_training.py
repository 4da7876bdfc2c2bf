"""ImageNet with training: the analysed images are the official val files (labels from the
devkit), the training images ILSVRC2012's train folder of wnid sub-folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_imagenet import EXPECTED, LEAVES, val_name, write_devkit
from test_imagenet import write_images as write_val_images

from pipeline.config import load_workflow
from pipeline.data.prepare_run import scan_workflow_data
from pipeline.errors import ConfigError
from pipeline.run_inputs import scan_settings

WORKFLOW = """
[data]
source = "imagenet"
root = "{root}"
train_root = "{train}"
[model]
name = "zfnet_small"
image_size = 32
[train]
enabled = true
"""


def _write_train(train: Path, per_class: dict[str, int]) -> None:
    from PIL import Image

    for wnid, count in per_class.items():
        (train / wnid).mkdir(parents=True)
        for i in range(count):  # the names of ILSVRC2012_img_train.tar's per-class archives
            Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(train / wnid / f"{wnid}_{i + 1}.JPEG")


def test_train_root_of_wnid_folders_beside_flat_val_files(tmp_path: Path, write_workflow):
    root, train = tmp_path / "val", tmp_path / "train"
    write_val_images(root, list(range(1, 7)))
    write_devkit(tmp_path)
    _write_train(train, {"n01484850": 1, "n01440764": 2, "n01443537": 3})
    (train / "n01440764.tar").write_bytes(b"a per-class archive left beside its folder")
    workflow = load_workflow(write_workflow(WORKFLOW.format(root=root, train=train)))
    scanned = scan_workflow_data(scan_settings(workflow), root, train)
    wnids = sorted(LEAVES.values())
    assert scanned.classes["name"].tolist() == wnids
    assert scanned.manifest["path"].tolist() == [val_name(i) for i in range(1, 7)]
    assert scanned.manifest["label"].tolist() == [wnids.index(w) for w in EXPECTED]
    paths = scanned.train_manifest["path"].tolist()
    assert paths == ["n01440764/n01440764_1.JPEG", "n01440764/n01440764_2.JPEG",
                     "n01443537/n01443537_1.JPEG", "n01443537/n01443537_2.JPEG",
                     "n01443537/n01443537_3.JPEG", "n01484850/n01484850_1.JPEG"]
    assert scanned.train_manifest["label"].tolist() == [0, 0, 1, 1, 1, 2]


def test_training_on_imagenet_needs_a_train_root(write_workflow):
    text = WORKFLOW.format(root="/data/imagenet/val", train="").replace('train_root = ""\n', "")
    with pytest.raises(ConfigError, match=r"\[data\] train_root is required"):
        load_workflow(write_workflow(text))

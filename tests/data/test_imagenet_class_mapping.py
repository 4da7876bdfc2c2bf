"""The AlexNet workflow's class mapping, the fast part of the offline AlexNet run (which is
tests/e2e/test_torchvision_offline.py): wnid folders become the 1000-class model labels and
the class names are the weights' own, from prepare alone, in this process."""

import pandas as pd
import torchvision
from support import REPO, pin_device, write_images

from pipeline.cli import main

WNIDS = ["n01440764", "n02099601"]  # tench, golden retriever: model labels 0 and 207


def test_wnid_folders_map_to_the_weights_classes(tmp_path, monkeypatch):
    data = tmp_path / "imagenet" / "val"
    write_images(data, WNIDS, per_class=2, size=40)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))  # prepare loads no weights
    monkeypatch.setenv("DECONV_ATLAS_OFFLINE", "1")
    workflow = tmp_path / "alexnet-imagenet.toml"  # the repository's, every stage on the CPU
    workflow.write_text(pin_device((REPO / "workflows" / "alexnet-imagenet.toml").read_text()))
    assert main(["run", "prepare", "-w", str(workflow), "--data", str(data)]) == 0
    run = tmp_path / "runs" / "alexnet-imagenet"
    classes = pd.read_parquet(run / "classes.parquet")
    categories = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert classes["name"].tolist() == categories
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert manifest.groupby("label")["path"].apply(lambda p: p.str.split("/").str[0].iloc[0]) \
        .to_dict() == {0: WNIDS[0], 207: WNIDS[1]}

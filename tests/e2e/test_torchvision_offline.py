"""The real AlexNet workflow runs offline from weights in a temporary torch hub cache (its class
mapping alone: tests/data/test_imagenet_class_mapping.py, in the fast loop)."""

import pandas as pd
import pytest
import torch
import torchvision
from support import QUICK_FEATUREVIS, REPO, pin_device, run_cli, write_images

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

WNIDS = ["n01440764", "n02099601"]  # tench, golden retriever: model labels 0 and 207


def _env(torch_home):
    return {"TORCH_HOME": str(torch_home), "DECONV_ATLAS_OFFLINE": "1"}


def test_alexnet_workflow_from_the_hub_cache_to_an_atlas(tmp_path, monkeypatch):
    data = tmp_path / "imagenet" / "val"
    write_images(data, WNIDS, per_class=2, size=96)
    torch_home = tmp_path / "torch-home"
    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    cache = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cache.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), cache)
    for key, value in _env(torch_home).items():
        monkeypatch.setenv(key, value)

    # the repository's workflow as it is, but featurevis in seconds (on a CPU, AlexNet's 1,152
    # units at 512 steps take hours: the workflow is for a GPU), every stage on the CPU
    workflow = tmp_path / "alexnet-imagenet.toml"
    workflow.write_text(pin_device((REPO / "workflows" / "alexnet-imagenet.toml").read_text()
                                   + QUICK_FEATUREVIS))
    result = run_cli("run", "all", "-w", str(workflow), "--data", str(data), cwd=tmp_path,
                     timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "alexnet-imagenet"
    classes = pd.read_parquet(run / "classes.parquet")
    assert len(classes) == 1000 and classes.loc[207, "name"] == weights.meta["categories"][207]
    index = tmp_path / "reports" / "alexnet-imagenet" / "index.html"
    assert index.is_file() and str(index) in result.stdout
    pages = sorted(p.name for p in (index.parent / "layers").glob("*.html"))
    assert pages == [f"conv{i}.html" for i in range(1, 6)]


def test_empty_hub_cache_names_the_file_and_folder(tmp_path, monkeypatch):
    data = tmp_path / "val"
    write_images(data, WNIDS, per_class=1)
    for key, value in _env(tmp_path / "empty-cache").items():
        monkeypatch.setenv(key, value)
    workflow = tmp_path / "alexnet-imagenet.toml"  # the repository's, every stage on the CPU
    workflow.write_text(pin_device((REPO / "workflows" / "alexnet-imagenet.toml").read_text()))
    result = run_cli("run", "all", "-w", str(workflow), "--data", str(data), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "alexnet-owt-7be5be79.pth" in line
    assert str(tmp_path / "empty-cache" / "hub" / "checkpoints") in line

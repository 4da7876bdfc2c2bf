"""README's "Your own model" examples run as written: each file block is written out under
the name its first line gives, and each workflow runs to an atlas (offline: the weights are
random, saved by the test where each route reads them)."""

import re

import pandas as pd
import pytest
import timm
import torch
import torchvision
from support import QUICK_FEATUREVIS, REPO, fill_hub_cache, pin_device, run_cli, write_images

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess


def readme_files() -> dict[str, str]:
    """The section's code blocks by the file name on their first line."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:toml|python)\n# (\S+)\n(.*?)```", section, re.S)
    return {name: body for name, body in blocks}


def write_example(folder, *names: str) -> None:
    files = readme_files()
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        # the stage runs in seconds: the README's workflows are for real data on a GPU; every
        # stage on the CPU
        text = (pin_device(files[name] + QUICK_FEATUREVIS) if name.endswith(".toml")
                else files[name])
        (folder / name).write_text(text)


def test_the_section_holds_the_three_routes():
    assert sorted(readme_files()) == ["my_models.py", "workflows/my-model.toml",
                                      "workflows/resnet18-ema.toml",
                                      "workflows/timm-resnet18.toml"]


def test_a_timm_name_with_weights_from_timms_cache(tmp_path, monkeypatch):
    write_example(tmp_path, "workflows/timm-resnet18.toml")
    write_images(tmp_path / "val", ["n01440764", "n02099601"], per_class=3, size=72)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("DECONV_ATLAS_OFFLINE", "1")
    torch.manual_seed(0)
    fill_hub_cache(tmp_path / "hub", "timm/resnet18.a1_in1k",
                   timm.create_model("resnet18").state_dict())
    result = run_cli("run", "all", "-w", "workflows/timm-resnet18.toml", "--data",
                     str(tmp_path / "val"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[model] timm/resnet18, weights: timm resnet18.a1_in1k" in result.stdout
    report = tmp_path / "reports" / "timm-resnet18"
    index = (report / "index.html").read_text()
    assert "<dd>timm resnet18.a1_in1k</dd>" in index and "64 × 64 px" in index
    classes = pd.read_parquet(tmp_path / "runs" / "timm-resnet18" / "classes.parquet")
    assert len(classes) == 1000 and classes.loc[207, "name"] == "golden retriever"
    assert sorted(p.name for p in (report / "layers").glob("*.html")) == [
        "act1.html", "layer3.1.act2.html"]


def test_a_model_file_with_a_lightning_checkpoint(tmp_path):
    write_example(tmp_path, "workflows/my-model.toml", "my_models.py")
    write_images(tmp_path / "images", ["cat", "dog"], per_class=4, size=40)
    namespace: dict = {}
    exec((tmp_path / "my_models.py").read_text(), namespace)
    torch.manual_seed(0)
    state = namespace["build"](2, width=6).state_dict()
    torch.save({"state_dict": {f"model.{name}": value for name, value in state.items()},
                "epoch": 9, "global_step": 90}, tmp_path / "last.ckpt")
    result = run_cli("run", "all", "-w", "workflows/my-model.toml", "--data",
                     str(tmp_path / "images"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    said = "last.ckpt, entry 'state_dict', prefix 'model.' removed"
    assert f"[model] my_models.py:build, weights: {said}" in result.stdout
    assert (tmp_path / "reports" / "my-model" / "layers" / "conv4.html").is_file()


def test_a_torchvision_architecture_with_its_ema_weights(tmp_path):
    write_example(tmp_path, "workflows/resnet18-ema.toml")
    write_images(tmp_path / "images", ["cat", "dog"], per_class=3, size=72)
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=2).state_dict()
    ema = {name: value + 0.5 if value.is_floating_point() else value
           for name, value in plain.items()}
    torch.save({"model": plain, "model_ema": {f"module.{k}": v for k, v in ema.items()}},
               tmp_path / "ema.pt")
    result = run_cli("run", "all", "-w", "workflows/resnet18-ema.toml", "--data",
                     str(tmp_path / "images"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("[model] resnet18, weights: ema.pt, entry 'model_ema', prefix 'module.' removed"
            in result.stdout)
    assert (tmp_path / "reports" / "resnet18-ema" / "layers" / "relu.html").is_file()

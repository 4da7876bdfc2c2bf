"""A researcher's own network, end to end, offline (the README's three routes run in
tests/e2e/test_readme_own_model.py): a timm model whose GELUs only the gradient can project, a
model file beside the workflow with its checkpoint saved the ways people save them; editing
that file reruns what it builds, touching it does not, and every refusal is one line that
leaves the run as it was."""

import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file
from support import OWN_MODEL_FILE as MODEL_FILE
from support import pin_device, run_cli, write_images

pytestmark = pytest.mark.slow  # each test runs the pipeline in a subprocess

SMALL_RUN = """
[featurevis]
steps = 16
[occlusion]
images = 2
[invariance]
images = 1
"""
OWN_WORKFLOW = """
name = "own"
[data]
root = "images"
[model]
factory = "my_models.py:build"
checkpoint = "{checkpoint}"
image_size = 32
[model.factory_args]
width = 6
""" + SMALL_RUN


def tree_digest(folder) -> dict:
    """Every file under ``folder`` with the sha256 of its bytes and its modification time."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = (
                    hashlib.sha256(handle.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return found


@pytest.fixture
def own_model(tmp_path):
    """A folder with images, the model file and its random weights as a state dict."""
    write_images(tmp_path / "images", ["cat", "dog"], per_class=4, size=40)
    (tmp_path / "my_models.py").write_text(MODEL_FILE)
    namespace: dict = {}
    exec(MODEL_FILE, namespace)  # the very class the file defines, to save its weights
    torch.manual_seed(0)
    return tmp_path, namespace["build"](2, width=6).state_dict()


CHECKPOINTS = {  # name -> (file, how it is saved, what the log says of it)
    "lightning": ("last.ckpt", lambda s: {
        "state_dict": {**{f"model.{k}": v for k, v in s.items()}, "loss.weight": torch.ones(2)},
        "epoch": 3, "global_step": 12, "hyper_parameters": {"lr": 0.01}},
        "last.ckpt, entry 'state_dict', prefix 'model.' removed, 1 other entries left out"),
    "ddp": ("ddp.pt", lambda s: {f"module.{k}": v for k, v in s.items()},
            "ddp.pt, prefix 'module.' removed"),
    "compiled": ("compiled.pt", lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
                 "compiled.pt, prefix '_orig_mod.' removed"),
    "safetensors": ("model.safetensors", None, "model.safetensors"),
}


@pytest.mark.parametrize("kind", sorted(CHECKPOINTS))
def test_a_model_file_with_its_checkpoint_as_saved(own_model, kind):
    folder, state = own_model
    name, saved, said = CHECKPOINTS[kind]
    if saved is None:
        save_file(state, str(folder / name))
    else:
        torch.save(saved(state), folder / name)
    (folder / "own.toml").write_text(pin_device(OWN_WORKFLOW.format(checkpoint=name)))
    result = run_cli("run", "all", "-w", "own.toml", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"[model] my_models.py:build, weights: {said}" in result.stdout
    index = (folder / "reports" / "own" / "index.html").read_text()
    assert f"<dd>{said}</dd>" in index.replace("&#39;", "'")
    assert sorted(p.name for p in (folder / "reports" / "own" / "layers").glob("*.html")) == [
        "conv1.html", "conv2.html", "conv3.html", "conv4.html"]


def test_editing_the_model_file_reruns_what_it_builds(own_model):
    folder, state = own_model
    torch.save(state, folder / "weights.pt")
    (folder / "own.toml").write_text(pin_device(OWN_WORKFLOW.format(checkpoint="weights.pt")))
    assert run_cli("run", "all", "-w", "own.toml", cwd=folder).returncode == 0

    def states() -> dict:
        result = run_cli("status", "-w", "own.toml", cwd=folder)
        assert result.returncode == 0, result.stderr
        return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[2:]
                if len(line.split()) > 1 and line.split()[1] in ("done", "stale", "missing")}

    model_file = folder / "my_models.py"
    os.utime(model_file, (model_file.stat().st_atime + 100, model_file.stat().st_mtime + 100))
    assert set(states().values()) == {"done"}  # touched: nothing to redo
    model_file.write_text(MODEL_FILE.replace("Non-sequential", "Non-sequential (edited)"))
    after = states()
    assert after["prepare"] == "done"  # it builds no model
    # rank builds none either, but reads activations, which is stale
    assert {after[s] for s in ("activations", "rank", "deconv", "occlusion", "invariance",
                               "render")} == {"stale"}


REFUSALS = {  # what the workflow names -> the start of the one line it gets
    "unknown timm name": ('[model]\nname = "timm/resnet5"\ncheckpoint = "weights.pt"\n',
                          "[model] unknown timm model 'resnet5'"),
    "factory raises": ('[model]\nfactory = "my_models.py:build"\ncheckpoint = "weights.pt"\n'
                       '[model.factory_args]\nwidth = -1\n', "my_models.py: build(width=-1, "
                       "num_classes=2) raised RuntimeError"),
    "factory returns no module": ('[model]\nfactory = "my_models.py:nothing"\n'
                                  'checkpoint = "weights.pt"\n',
                                  "my_models.py: nothing() returned a NoneType"),
    "factory file missing": ('[model]\nfactory = "models/mine.py:build"\n'
                             'checkpoint = "weights.pt"\n', "mine.py: model file not found"),
    "whole pickled model": ('[model]\nfactory = "my_models.py:build"\n'
                            'checkpoint = "whole.pt"\n', "whole.pt: holds pickled Python"),
    "TorchScript": ('[model]\nfactory = "my_models.py:build"\ncheckpoint = "scripted.pt"\n',
                    "scripted.pt: a TorchScript file, and the deconvnet needs the Python model"),
}


def test_each_refusal_is_one_line_and_leaves_the_run_as_it_was(own_model):
    folder, state = own_model
    (folder / "my_models.py").write_text(MODEL_FILE + "\n\ndef nothing():\n    return None\n")
    torch.save(state, folder / "weights.pt")
    whole = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    torch.save(whole, folder / "whole.pt")  # a whole module, as torch.save(model) writes it
    torch.jit.save(torch.jit.script(whole), folder / "scripted.pt")
    (folder / "own.toml").write_text(pin_device(OWN_WORKFLOW.format(checkpoint="weights.pt")))
    assert run_cli("run", "all", "-w", "own.toml", cwd=folder).returncode == 0
    before = tree_digest(folder / "runs"), tree_digest(folder / "reports")
    for what, (model_section, expected) in REFUSALS.items():
        (folder / "bad.toml").write_text(pin_device('name = "own"\n[data]\nroot = "images"\n'
                                                    + model_section.replace("width = 6", "")))
        result = run_cli("run", "all", "-w", "bad.toml", cwd=folder)
        assert result.returncode == 2, (what, result.stderr[-2000:])
        line = result.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, (what, line)
        assert expected in line, (what, line)
        assert (tree_digest(folder / "runs"), tree_digest(folder / "reports")) == before, what


def test_a_timm_model_with_gelu_is_projected_by_the_gradient_only(tmp_path):
    write_images(tmp_path / "images", ["cat", "dog"], per_class=3, size=40)
    torch.manual_seed(0)
    from pipeline.models import get_model

    torch.save(get_model("timm/convnext_atto", num_classes=2).state_dict(), tmp_path / "w.pt")
    workflow = """
name = "convnext"
[data]
root = "images"
[model]
name = "timm/convnext_atto"
checkpoint = "w.pt"
image_size = 32
[activations]
modules = ["stages.0.blocks.1", "stages.1.blocks.1"]
[invariance]
images = 1
"""
    (tmp_path / "deconvnet.toml").write_text(pin_device(workflow))
    refused = run_cli("run", "all", "-w", "deconvnet.toml", cwd=tmp_path)
    assert refused.returncode == 2 and "\n" not in refused.stderr.strip()
    assert "GELU" in refused.stderr and 'methods = ["gradient"]' in refused.stderr
    assert not (tmp_path / "runs" / "convnext" / "stamps").exists()
    (tmp_path / "gradient.toml").write_text(pin_device(workflow + """
[deconv]
methods = ["gradient"]
[occlusion]
images = 0
"""))
    result = run_cli("run", "all", "-w", "gradient.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "reports" / "convnext" / "layers").glob("*.html")) \
        == ["stages.0.blocks.1.html", "stages.1.blocks.1.html"]

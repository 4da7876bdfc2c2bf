"""Weights files as people save them: each format loads into the model it was saved from, or is
refused in one line naming the file and what to do."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.errors import UserError
from pipeline.models.checkpoints import read_checkpoint, strip_prefix
from pipeline.models.loading import fit_state_dict


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def model() -> nn.Module:
    net = small()
    net(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    return net


def loaded(path, key="", trust=False):
    """(the weights of ``path`` loaded into a fresh model, what was done to the names)."""
    checkpoint = read_checkpoint(path, "w.toml", key=key, trust_pickle=trust)
    fresh = model()
    for p in fresh.parameters():
        nn.init.zeros_(p)
    done = fit_state_dict(fresh, checkpoint.state, path, "small", 2)
    return fresh, checkpoint, done


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))


def prefixed(prefix: str, state: dict) -> dict:
    return {prefix + name: value for name, value in state.items()}


@pytest.mark.parametrize("content, key, prefix", [
    (lambda s: s, "", ""),
    (lambda s: {"state_dict": {**prefixed("model.", s), "loss.weight": torch.ones(2)},
                "epoch": 3, "global_step": 30, "hyper_parameters": {"lr": 0.1}},
     "state_dict", "model."),  # Lightning
    (lambda s: {"state_dict": prefixed("net.", s), "epoch": 1}, "state_dict", "net."),
    (lambda s: prefixed("module.", s), "", "module."),  # DistributedDataParallel
    (lambda s: prefixed("_orig_mod.", s), "", "_orig_mod."),  # torch.compile
    (lambda s: {"state_dict": prefixed("model._orig_mod.", s)}, "state_dict",
     "model._orig_mod."),  # a compiled model inside a LightningModule
    (lambda s: {"model": prefixed("module.", s), "optimizer": {"lr": 1}}, "model", "module."),
])
def test_formats_load_the_saved_weights(tmp_path, content, key, prefix):
    saved = model()
    path = tmp_path / "weights.ckpt"
    torch.save(content(saved.state_dict()), path)
    fresh, checkpoint, done = loaded(path)
    assert same(fresh, saved)
    assert checkpoint.key == key
    assert done.startswith(f"prefix '{prefix}' removed") if prefix else done == ""


def test_lightning_leaves_other_entries_out_and_says_so(tmp_path):
    saved = model()
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {**prefixed("model.", saved.state_dict()),
                               "criterion.weight": torch.ones(2)}}, path)
    _, _, done = loaded(path)
    assert done == "prefix 'model.' removed, 1 other entries left out"


def test_ema_is_used_only_when_asked(tmp_path):
    saved, ema = model(), model()
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    path = tmp_path / "ema.pt"
    torch.save({"model": saved.state_dict(), "model_ema": prefixed("module.", ema.state_dict())},
               path)
    assert same(loaded(path)[0], saved)
    fresh, checkpoint, done = loaded(path, key="model_ema")
    assert same(fresh, ema) and checkpoint.key == "model_ema" and "module." in done
    only_ema = tmp_path / "only_ema.pt"
    torch.save({"state_dict_ema": ema.state_dict(), "epoch": 4}, only_ema)
    with pytest.raises(UserError, match="set \\[model\\] checkpoint_key to one of: "
                                        "state_dict_ema"):
        loaded(only_ema)
    with pytest.raises(UserError, match="no state dict under 'nope'"):
        loaded(path, key="nope")


def test_safetensors(tmp_path):
    saved = model()
    path = tmp_path / "model.safetensors"
    save_file(prefixed("module.", saved.state_dict()), str(path))
    fresh, checkpoint, done = loaded(path)
    assert same(fresh, saved) and checkpoint.key == "" and "module." in done
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="broken.safetensors: not a readable .safetensors file"):
        loaded(broken)


def test_a_whole_pickled_model_is_refused_unless_trusted(tmp_path):
    saved = model()
    path = tmp_path / "whole.pt"
    torch.save(saved, path)
    with pytest.raises(UserError) as refused:
        loaded(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: holds pickled Python objects")
    assert "runs code" in message and "trust_pickle = true" in message
    assert "(torch.nn.modules.activation.ReLU, torch.nn.modules.container.Sequential, " \
        "torch.nn.modules.conv.Conv2d and 2 more)" in message  # sorted: the same every time
    fresh, _, _ = loaded(path, trust=True)
    assert same(fresh, saved)


def test_torchscript_is_refused_with_how_to_get_a_state_dict(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model()), path)
    with pytest.raises(UserError) as refused:
        loaded(path)
    message = str(refused.value)
    assert "\n" not in message and "TorchScript" in message and "deconvnet needs the Python " \
        "model" in message and "torch.jit.load(path).state_dict()" in message


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"model.fc.weight": torch.ones(3, 3)}}, path)
    with pytest.raises(UserError, match="weights do not fit model 'small'"):
        loaded(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UserError, match="notes.txt: not a PyTorch weights file"):
        loaded(text)


def test_strip_prefix_keeps_names_that_already_match():
    wanted = {"features.0.weight", "features.0.bias"}
    state = {name: torch.zeros(1) for name in wanted}
    assert strip_prefix(state, wanted) == (state, "", 0)


def test_a_reference_training_script_checkpoint_loads_its_weights(tmp_path):
    """torchvision's and timm's training scripts keep the arguments (a Namespace) and a tensor
    or two (best_acc1) beside the weights: read as plain data, the weights entry first."""
    import argparse

    saved = model()
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": saved.state_dict(), "best_acc1": torch.tensor(71.2), "epoch": 89,
                "args": argparse.Namespace(lr=0.1, arch="small")}, path)
    fresh, checkpoint, _ = loaded(path)
    assert same(fresh, saved) and checkpoint.key == "model"


def test_two_models_in_one_file_are_refused_naming_both(tmp_path):
    teacher, student = model(), model()
    path = tmp_path / "distilled.ckpt"
    torch.save({"state_dict": {**prefixed("student.", student.state_dict()),
                               **prefixed("teacher.", teacher.state_dict())}}, path)
    with pytest.raises(UserError, match="found under student. and teacher. alike; save the "
                                        "one to analyse on its own"):
        loaded(path)

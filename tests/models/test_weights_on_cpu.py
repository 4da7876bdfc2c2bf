"""Every weights file the pipeline writes goes through one helper that moves tensors to the CPU
first (issue 26): a ``model.pt`` trained on a GPU loads with a plain ``torch.load`` anywhere."""

from __future__ import annotations

import ast
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from pipeline.models.training import on_cpu, save_state

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
SAVERS = {"save", "save_file", "save_model"}  # torch.save, safetensors' writers


def _save_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every call of torch.save or a safetensors writer in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            if name in SAVERS and (owner in ("torch", "safetensors") or name != "save"):
                found.append((node.lineno, f"{owner}.{name}" if owner else name))
    return found


def test_only_save_state_writes_weights():
    calls = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, name in _save_calls(tree):
            calls[f"{path.relative_to(PACKAGE.parent)}:{line}"] = name
    assert list(calls.values()) == ["torch.save"], calls
    (where,) = calls
    source = (PACKAGE.parent / where.split(":")[0]).read_text(encoding="utf-8")
    helper = next(node for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.FunctionDef) and node.name == "save_state")
    assert helper.lineno <= int(where.split(":")[1]) <= helper.end_lineno  # inside the helper
    assert "on_cpu(state)" in ast.get_source_segment(source, helper)


def test_the_helper_writes_detached_cpu_tensors_that_load_anywhere(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = {"model": model.state_dict(), "epoch": 3,
             "optimizer": {"state": {0: {"momentum_buffer": torch.ones(4, requires_grad=True)}},
                           "param_groups": [{"lr": 0.1, "params": (0, 1)}]}}
    save_state(state, tmp_path / "checkpoint.pt")
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    tensors = [value for value in loaded["model"].values()] + \
        [loaded["optimizer"]["state"][0]["momentum_buffer"]]
    assert all(t.device.type == "cpu" and not t.requires_grad for t in tensors)
    assert isinstance(loaded["model"], OrderedDict)
    assert loaded["optimizer"]["param_groups"][0]["params"] == (0, 1)
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    fresh.load_state_dict(loaded["model"])  # the state dict's metadata survived the move
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_on_cpu_keeps_the_structure_around_the_tensors():
    value = {"a": [torch.zeros(1), (torch.ones(1), "x")], "b": None}
    moved = on_cpu(value)
    assert moved["b"] is None and moved["a"][1][1] == "x" and isinstance(moved["a"][1], tuple)
    assert torch.equal(moved["a"][1][0], torch.ones(1))

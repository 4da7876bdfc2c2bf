"""Captum as the reference of the projector: the neuron's deconvnet / guided attribution, with
the projector's seeding (the activation's own value), compared after normalising both.

Captum applies its rules at `nn.ReLU` modules only, so a model that rectifies otherwise is
compared on a `reference` copy whose rectifiers are modules (see tests/interp/test_rules.py).
Captum also applies the rule at the layer's own ReLU; with a positive unit that is the identity,
so the unit compared is the layer's largest activation."""

from __future__ import annotations

import warnings

import torch
from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop
from torch import nn

from pipeline.interp import Projector

CAPTUM = {"deconvnet": NeuronDeconvolution, "guided": NeuronGuidedBackprop}


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output (last call, for a reused module) without any rule."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, a, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[-1]


def best_unit(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[int, int, int]:
    """(channel, y, x) of the layer's largest activation on the single image ``x``."""
    out = layer_output(model, layer, x)[0]
    c, y, xx = (int(v) for v in torch.unravel_index(out.argmax(), out.shape))
    assert out[c, y, xx] > 0
    return c, y, xx


def normalised_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference of the two projections, each divided by its largest magnitude."""
    assert a.abs().max() > 0 and b.abs().max() > 0
    return float((a / a.abs().max() - b / b.abs().max()).abs().max())


def compare_with_captum(model: nn.Module, layers: list[str], size: int,
                        reference: nn.Module | None = None, seed: int = 1) -> float:
    """Project each layer's largest unit on one random image with both rules and assert the
    result is Captum's on ``reference`` (default: the model itself) within 1e-5, relative;
    return the largest difference seen."""
    reference = model if reference is None else reference
    torch.manual_seed(seed)
    x = torch.rand(1, 3, size, size)
    worst = 0.0
    for layer in layers:
        c, y, xx = best_unit(model, layer, x)
        for method, cls in CAPTUM.items():
            ours = Projector(model, method).project(
                x, layer, torch.tensor([c]), torch.tensor([[y, xx]]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = cls(reference, reference.get_submodule(layer)).attribute(
                    x.clone(), neuron_selector=(c, y, xx))
            diff = normalised_diff(ours, ref)
            assert diff <= 1e-5, (layer, method, diff)
            worst = max(worst, diff)
    return worst

"""Which feature maps of a model the atlas analyses by default, and their shapes and fields.

The paper visualises the rectified output of every convolutional layer. The default set is
therefore: for each `nn.Conv2d` call in execution order, the first `nn.ReLU` call that runs after
it (BatchNorm and the like in between are skipped; in a ResNet block the second conv is followed
by the ReLU after the residual add), labelled conv1..convN. A conv that no nn.ReLU follows (a
model using functional relu) is recorded itself.

Layers are addressed by module name, so a module called several times is one layer: torchvision
ResNet blocks call `self.relu` twice, and `layerX.Y.relu` denotes its LAST call (after the
residual add), like `Projector` and `receptive_fields`. Several convs mapping to the same module
name give one layer (at its first position), so ResNet-18 has 9 default layers: the stem ReLU and
one per BasicBlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.interp.receptive_field import ReceptiveField, receptive_fields


@dataclass(frozen=True)
class LayerInfo:
    """One analysed feature map: module name, display label, channels, (C, h, w), field."""

    name: str
    label: str
    channels: int
    out_shape: tuple[int, int, int]
    receptive_field: ReceptiveField


def _trace_calls(
    model: nn.Module, input_size: tuple[int, int]
) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, module, output shape) of every module call with a tensor output, in call order
    (a module's hook fires after its children's), from one zeros forward pass in eval mode."""
    calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def hook(name: str):
        def fn(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                calls.append((name, module, tuple(output.shape)))
        return fn

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    flags = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    return calls


def _default_names(calls: list[tuple[str, nn.Module, tuple[int, ...]]]) -> list[str]:
    names: list[str] = []
    for i, (name, module, shape) in enumerate(calls):
        if not isinstance(module, nn.Conv2d) or len(shape) != 4:
            continue
        relu = next((n for n, m, s in calls[i + 1:] if isinstance(m, nn.ReLU) and len(s) == 4),
                    None)
        chosen = relu if relu is not None else name
        if chosen not in names:
            names.append(chosen)
    return names


def _feature_maps(calls: list[tuple[str, nn.Module, tuple[int, ...]]],
                  fields: dict[str, ReceptiveField]) -> list[str]:
    shapes = {n for n, _, s in calls if len(s) == 4}
    return [n for n in dict.fromkeys(n for n, _, _ in calls) if n in shapes and n in fields]


def feature_map_names(model: nn.Module, input_size: tuple[int, int]) -> list[str]:
    """Every module whose (last) output is a 4-D feature map with a known receptive field, in
    call order: the names `analysable_layers(names=...)` accepts."""
    return _feature_maps(_trace_calls(model, input_size), receptive_fields(model, input_size))


def analysable_layers(
    model: nn.Module, input_size: tuple[int, int], names: Sequence[str] | None = None
) -> list[LayerInfo]:
    """Layers to analyse at `input_size` (H, W): the default conv1..convN set (see module doc),
    or the explicit dotted module `names` (labelled by their name), in the given order."""
    calls = _trace_calls(model, input_size)
    fields = receptive_fields(model, input_size)
    shapes = {n: s for n, _, s in calls if len(s) == 4}  # later calls overwrite: last call
    valid = _feature_maps(calls, fields)
    if names is None:
        chosen = [(n, f"conv{i + 1}") for i, n in enumerate(
            n for n in _default_names(calls) if n in fields)]
    else:
        unknown = [n for n in names if n not in valid]
        if unknown:
            shown = ", ".join(valid[:20]) + (", ..." if len(valid) > 20 else "")
            raise UserError(
                f"unknown or non-feature-map layer(s) {', '.join(map(repr, unknown))}: use "
                f"dotted module names with a 4-D output, one of {shown} ({len(valid)} in all)"
            )
        chosen = [(n, n) for n in names]
    return [
        LayerInfo(name=n, label=label, channels=shapes[n][1],
                  out_shape=(shapes[n][1], shapes[n][2], shapes[n][3]),
                  receptive_field=fields[n])
        for n, label in chosen
    ]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``nn.Conv2d`` in the model's order, with its dotted name (None if it has
    none): the layer whose filters look at pixels, shown as the paper's Figure 6."""
    return next(((name, module) for name, module in model.named_modules()
                 if isinstance(module, nn.Conv2d)), None)

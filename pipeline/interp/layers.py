"""Which feature maps of a model the atlas analyses by default, and their shapes and fields.

The paper visualises the rectified output of every convolutional layer, so the default set is
the activated output of each conv block (after BatchNorm and the activation): for each
`nn.Conv2d` call in execution order, the first *activation output* that follows it, labelled
conv1..convN. An activation output is the output of a module whose forward returns what a
nonlinearity call made inside it returned, whichever way the call is made (see
`pipeline.interp.rules`): an `nn.ReLU` / `nn.ReLU6` / `nn.SiLU` module, or a block such as
torchvision's GoogLeNet / Inception `BasicConv2d`, which returns `F.relu(bn(conv(x)))`. A
nonlinearity that no module returns (DenseNet's final `F.relu`) has no name of its own and is not
a layer. One whose output is not a channels-first feature map (ConvNeXt's GELU, applied
channels-last inside each block) stands for the block around it: the outermost module holding
its convolution and no other, whose output (after the residual add) is the layer.

Rectifiers (ReLU, ReLU6, hardtanh(0, m)) are what the deconvnet has a rule for. A network whose
blocks end in another activation (EfficientNet's SiLU, MobileNet v3's Hardswish) gets those
activation outputs as defaults, which only `method = "gradient"` projects (`default_notes` says
so). Squeeze-and-excitation gates are skipped: their 1 x 1 maps are channel weights, not
features. A conv that no activation follows is recorded itself. Every default is a 4-D
channels-first feature map with a known receptive field; others are left out (`default_notes`
counts them). After a squeeze-and-excitation gate, or a normalisation whose statistics span the
feature map (GroupNorm, InstanceNorm, LayerNorm over H and W), every unit sees the whole image:
the defaults stop there, and such a layer named explicitly is refused, naming the normalisation.

Layers are addressed by module name, so a module called several times is one layer: torchvision
ResNet blocks call `self.relu` twice, and `layerX.Y.relu` denotes its LAST call (after the
residual add), like `Projector` and `receptive_fields`. Several convs mapping to the same module
name give one layer (at its first position), so ResNet-18 has 9 default layers: the stem ReLU and
one per BasicBlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from pipeline.errors import UserError
from pipeline.inference.store import LayerMeta
from pipeline.interp.receptive_field import ReceptiveField, receptive_fields, traced_fields
from pipeline.interp.rules import ModuleStack, Nonlinearities, Nonlinearity
from pipeline.models.evaluation import blank_image, evaluating

_GATES = (SqueezeExcitation,)  # modules whose maps scale channels instead of being features


@dataclass(frozen=True)
class LayerInfo:
    """One analysed feature map: module name, display label, channels, (C, h, w), field."""

    name: str
    label: str
    channels: int
    out_shape: tuple[int, int, int]
    receptive_field: ReceptiveField


@dataclass(frozen=True)
class _Call:
    """One module call with a tensor output; ``activation`` is the kind of nonlinearity whose
    output the module returned ("" if none), ``ruled`` whether the deconvnet has a rule for it
    (a rectifier)."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    activation: str
    ruled: bool


def _trace_calls(model: nn.Module, input_size: tuple[int, int]) -> list[_Call]:
    """Every module call with a tensor output, in call order (a module's hook fires after its
    children's), from one zeros forward pass in eval mode, each with the nonlinearity it
    returned; functional calls are seen through `Nonlinearities` without changing them."""
    calls: list[_Call] = []
    made: dict[str, list[Nonlinearity]] = {}  # per running module: the calls made directly in it

    def hook(name: str):
        def fn(module: nn.Module, args: tuple, output: object) -> None:
            own = made.pop(name, [])
            if isinstance(output, torch.Tensor):
                returned = next((c for c in reversed(own) if c.output is output), None)
                kind, ruled = (returned.kind, returned.ruled) if returned else ("", False)
                calls.append(_Call(name, module, tuple(output.shape), kind, ruled))
        return fn

    stack = ModuleStack(model)  # registered first: a module has left the stack when `fn` runs
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with evaluating(model), Nonlinearities(
                None, lambda call: made.setdefault(call.module, []).append(call), stack.names):
            model(blank_image(model, input_size))
    finally:
        stack.remove()
        for h in handles:
            h.remove()
    return calls


def _gated(model: nn.Module) -> set[str]:
    """Names of the gate modules (squeeze-and-excitation) of ``model``."""
    return {name for name, module in model.named_modules() if isinstance(module, _GATES)}


def _in_gate(name: str, gates: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in gates for i in range(1, len(parts) + 1))


def _default_names(calls: list[_Call], gates: set[str],
                   fields: dict[str, ReceptiveField]) -> list[str]:
    names: list[str] = []
    convs = [c.name for c in calls if isinstance(c.module, nn.Conv2d) and len(c.shape) == 4
             and not _in_gate(c.name, gates)]
    for i, call in enumerate(calls):
        if (not isinstance(call.module, nn.Conv2d) or len(call.shape) != 4
                or _in_gate(call.name, gates)):
            continue
        activated = next((c.name for c in calls[i + 1:] if c.activation and len(c.shape) == 4
                          and not _in_gate(c.name, gates)), None)
        if activated is not None and activated not in fields:
            activated = _block(call.name, activated, convs, fields) or activated
        chosen = activated if activated is not None else call.name
        if chosen not in names:
            names.append(chosen)
    return names


def _block(conv: str, activation: str, convs: list[str],
           fields: dict[str, ReceptiveField]) -> str | None:
    """The outermost module around ``conv`` and ``activation`` that holds no other convolution
    and returns a channels-first feature map, for an activation that is not one itself:
    ConvNeXt applies its GELU channels-last inside each block, so the block's output (after the
    residual add) is the layer, as the ReLU after the add is in a ResNet block."""
    parts = activation.split(".")
    found = None
    for end in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:end])
        inside = {name for name in convs if name.startswith(prefix + ".")}
        if conv not in inside:
            continue
        if inside != {conv}:
            break
        if prefix in fields:
            found = prefix
    return found


def _feature_maps(calls: list[_Call], fields: dict[str, ReceptiveField]) -> list[str]:
    shapes = {c.name for c in calls if len(c.shape) == 4}
    return [n for n in dict.fromkeys(c.name for c in calls) if n in shapes and n in fields]


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
    fields, after = traced_fields(model, input_size)
    shapes = {c.name: c.shape for c in calls if len(c.shape) == 4}  # last call wins
    valid = _feature_maps(calls, fields)
    whole = next((n for n in names or () if n in shapes and n in after), None)
    if whole is not None:
        raise UserError(
            f"layer {whole!r} has no receptive field: it comes after {after[whole]}, whose "
            "statistics span the whole feature map, so each of its units depends on the whole "
            "image; analyse layers before it")
    if names is None:
        chosen = [(n, f"conv{i + 1}") for i, n in enumerate(
            n for n in _default_names(calls, _gated(model), fields) if n in fields)]
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


def _kinds(kinds: Iterable[str]) -> str:
    return " and ".join(dict.fromkeys(kinds))


def default_notes(model: nn.Module, input_size: tuple[int, int]) -> list[str]:
    """One line each on why the default layers are not every rectified output: activations
    without a deconvnet rule, or activation maps left out because their receptive field is
    unknown. Empty for a ReLU network like AlexNet or ResNet."""
    calls = _trace_calls(model, input_size)
    fields, after = traced_fields(model, input_size)
    gates = _gated(model)
    defaults = [n for n in _default_names(calls, gates, fields) if n in fields]
    kind = {c.name: c.activation for c in calls if c.activation}  # last call wins
    rectified = {c.name for c in calls if c.ruled}
    maps = [n for n in dict.fromkeys(c.name for c in calls if c.activation and len(c.shape) == 4)
            if not _in_gate(n, gates)]
    notes = []
    chosen = [kind[n] for n in defaults if n in kind]
    if chosen and not rectified.intersection(defaults):
        notes.append(f"its activations are {_kinds(chosen)}, for which the deconvnet has no "
                     f"rule: the defaults are its {_kinds(chosen)} outputs, not rectified ones")
    inside = [n for n in maps if n not in fields
              and any(n.startswith(block + ".") for block in defaults)]
    if inside:
        notes.append(f"its {_kinds(kind[n] for n in inside)} outputs are not channels-first "
                     "feature maps (applied channels-last inside each block): the defaults are "
                     "the blocks' outputs, after the residual add")
    modules = {c.name: c.module for c in calls}
    raw = [n for n in defaults if isinstance(modules[n], nn.Conv2d)]
    if raw:
        shown = ", ".join(raw[:3]) + (", ..." if len(raw) > 3 else "")
        notes.append(f"{len(raw)} of its defaults ({shown}) are raw convolution outputs: no "
                     "module returns an activation after them (a rectifier called in a forward "
                     "that goes on, or none); wrap it in a module (nn.ReLU) to analyse the "
                     "rectified map")
    left_out = [n for n in maps if n not in fields and n not in inside]
    if left_out:
        gate = min(gates, key=_order(calls)) if gates else None
        norm = after.get(left_out[0])  # in call order, so it comes before any later gate
        why = (f"after {norm}, whose statistics span the whole feature map, units see the "
               "whole image, so their receptive field is unknown" if norm else
               f"after its first squeeze-excitation gate ({gate}), units see the whole image, "
               "so their receptive field is unknown" if gate else
               "their receptive field is unknown (a reshape, permute or irregular "
               "pooling comes before them)")
        kinds = _kinds(kind[n] for n in left_out)
        notes.append(f"{len(left_out)} of its {len(maps)} activation maps ({kinds}, from "
                     f"{left_out[0]} on) are left out: {why}")
    return notes


def _order(calls: list[_Call]):
    """Sort key: a module's position in call order (never-called modules last)."""
    first = {name: i for i, name in reversed(list(enumerate(c.name for c in calls)))}
    return lambda name: first.get(name, len(calls))


def store_layer_metas(model: nn.Module, size: int, names: Sequence[str] | None
                      ) -> list[LayerMeta]:
    """The layers the store records: ``names`` (all analysable ones when None), for a
    ``size`` px square input."""
    layers = analysable_layers(model, (size, size), names=list(names) if names else None)
    return [LayerMeta(layer.label, layer.name, layer.channels, layer.out_shape[1],
                      layer.out_shape[2], layer.receptive_field.size) for layer in layers]

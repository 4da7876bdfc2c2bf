"""Where a traced node keeps the height and width of the image, and what mixes them.

`pipeline.interp.receptive_field` follows the geometry of every feature map along the model's
`torch.fx` graph. This module answers the two questions it asks of each node: where H and W
are in the node's output (channels first, channels last between two permutes, the 5-D view of
a channel shuffle), and whether the node normalises its input with statistics taken over H and
W. Such a normalisation (GroupNorm, InstanceNorm, LayerNorm over (C, H, W), BatchNorm with
batch statistics, ``F.normalize`` over a spatial dimension) makes every unit after it depend
on the whole image, as a squeeze-and-excitation gate does, so those units have no receptive
field. BatchNorm in eval mode (running statistics), local response normalisation (across
channels) and LayerNorm or ``F.normalize`` over channels act per position and keep it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import fx, nn


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape of a node's output when it is one tensor (from `ShapeProp`), else None."""
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return tuple(int(n) for n in shape) if shape is not None else None


def node_hw(node: fx.Node, axes: tuple[int, int] = (2, 3)) -> tuple[int, int] | None:
    """(H, W) of a node's output whose spatial dimensions are ``axes`` (a 4-D map, or the
    5-D view of a channel shuffle); None otherwise."""
    shape = node_shape(node)
    if shape is None or len(shape) < 3 or max(axes) >= len(shape):
        return None
    return shape[axes[0]], shape[axes[1]]


def permutation(gm: fx.GraphModule, node: fx.Node, ndim: int) -> tuple[int, ...] | None:
    """The dimension order of a permute or transpose node (torchvision's ``Permute`` module,
    ``x.permute``, ``torch.permute``, ``x.transpose``, ``torch.transpose``), else None."""
    dims = None
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        dims = getattr(module, "dims", None) if type(module).__name__ == "Permute" else None
    elif node.op == "call_method" and node.target == "permute":
        dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], Sequence) \
            else node.args[1:]
    elif node.op == "call_function" and node.target is torch.permute:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dims")
    elif node.target in ("transpose", torch.transpose) and len(node.args) == 3 \
            and node.op in ("call_method", "call_function"):
        swapped: tuple[Any, ...] = node.args[1:]  # fx types them as any argument: ints here
        first, second = (int(d) % ndim for d in swapped)
        dims = list(range(ndim))
        dims[first], dims[second] = second, first
    if dims is None or not all(isinstance(d, int) for d in dims):
        return None
    return tuple(int(d) % ndim for d in dims)


def channel_split(node: fx.Node, axes: dict[fx.Node, tuple[int, int] | None]) -> bool:
    """Whether ``node`` splits a feature map into parts along a dimension other than H and W
    (``chunk``/``split``, as ShuffleNet does into its two branches): each part keeps the
    geometry."""
    splits = ("chunk", "split", torch.chunk, torch.split)
    if node.op not in ("call_method", "call_function") or node.target not in splits \
            or not node.all_input_nodes:
        return False
    source = axes.get(node.all_input_nodes[0])
    if source is None:
        return False
    shape = node_shape(node.all_input_nodes[0])
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
    if shape is None or not isinstance(dim, int):
        return False
    return dim % len(shape) not in (0, *source)


def spatial_axes(gm: fx.GraphModule, node: fx.Node,
                 axes: dict[fx.Node, tuple[int, int] | None]) -> tuple[int, int] | None:
    """Where H and W are in the node's output: (2, 3) channels first; (1, 2) in ConvNeXt's
    channels-last stretches (permute, LayerNorm and Linear over channels, GELU, permute back),
    which act per position and so keep the geometry; the last two dimensions of the 5-D view
    in which ShuffleNet shuffles its channels (view, transpose, view back)."""
    if node.op == "placeholder":
        return (2, 3)
    source_node = next((a for a in node.all_input_nodes if axes.get(a) is not None), None)
    shape = node_shape(node)
    if source_node is None or shape is None:
        return None
    source, before = axes[source_node], node_shape(source_node)
    assert source is not None  # source_node was chosen for its known axes
    if before is None:  # a part of a channel split (see channel_split)
        return source
    order = permutation(gm, node, len(shape))
    if order is not None:
        return order.index(source[0]), order.index(source[1])
    if len(shape) == len(before):
        return source
    if source == (len(before) - 2, len(before) - 1) and len(shape) >= 3:
        return len(shape) - 2, len(shape) - 1  # a reshape of the dimensions before H and W
    return None


# the functional normalisations: where their statistics are taken is read off their arguments
_GROUP_NORMS = (F.group_norm, torch.group_norm)
_LAYER_NORM_MODULES = tuple(m for m in (nn.LayerNorm, getattr(nn, "RMSNorm", None)) if m)
_LAYER_NORMS = tuple(f for f in (F.layer_norm, torch.layer_norm, getattr(F, "rms_norm", None))
                     if f is not None)


def module_spans(module: nn.Module, ndim: int, axes: tuple[int, int] = (2, 3)) -> bool:
    """Whether ``module`` normalises an ``ndim``-D input whose H and W are ``axes`` with
    statistics taken over H and W, in eval mode (the mode every analysis runs in, whatever
    the module's own flag says)."""
    if isinstance(module, nn.GroupNorm):
        return True
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return not module.track_running_stats
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.running_mean is None  # batch statistics: over N, H and W
    if isinstance(module, _LAYER_NORM_MODULES):  # over the last len(normalized_shape) dims
        return _covers(ndim - len(tuple(module.normalized_shape)), ndim, axes)
    return False


def _covers(first: int, ndim: int, axes: tuple[int, int]) -> bool:
    """Whether the dimensions ``first`` .. ``ndim - 1`` include H or W."""
    return any(first <= axis < ndim for axis in axes)


def _ints(values: object) -> TypeGuard[Sequence[int]]:
    return isinstance(values, Sequence) and all(isinstance(v, int) for v in values)


def _argument(node: fx.Node, position: int, name: str, default: object) -> object:
    return node.kwargs.get(name, node.args[position] if len(node.args) > position else default)


def spanning_normalisation(gm: fx.GraphModule, node: fx.Node,
                           axes: tuple[int, int] | None) -> str | None:
    """What ``node`` is ("GroupNorm (gn1)", "group_norm (in block)") when it normalises its
    first input, whose H and W are ``axes``, over H and W; None otherwise."""
    source = node.all_input_nodes[0] if node.all_input_nodes else None
    shape = node_shape(source) if source is not None else None
    if axes is None or shape is None:
        return None
    ndim = len(shape)
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return f"{type(module).__name__} ({node.target})" \
            if module_spans(module, ndim, axes) else None
    if node.op != "call_function":
        return None
    target = node.target
    if target in _GROUP_NORMS:
        spans = True
    elif target is F.instance_norm:
        spans = bool(_argument(node, 5, "use_input_stats", True))
    elif target is F.batch_norm:
        spans = bool(_argument(node, 5, "training", False)) or \
            _argument(node, 1, "running_mean", None) is None
    elif target in _LAYER_NORMS:  # an extent known only when run (x.shape[1:]) may span
        normalized = _argument(node, 1, "normalized_shape", ())
        normalized = (normalized,) if isinstance(normalized, int) else normalized
        spans = not _ints(normalized) or _covers(ndim - len(normalized), ndim, axes)
    elif target is F.normalize:
        dims = _argument(node, 2, "dim", 1)
        dims = (dims,) if isinstance(dims, int) else dims
        spans = not _ints(dims) or any(d % ndim in axes for d in dims)
    else:
        return None
    if not spans:
        return None
    scopes = [re.sub(r"@\d+$", "", scope) for scope in node.meta.get("nn_module_stack", {})]
    name = getattr(target, "__name__", str(target))
    return f"{name} (in {scopes[-1]})" if scopes else name

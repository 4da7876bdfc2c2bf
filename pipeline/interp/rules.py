"""The back-projection rules at a network's nonlinearities, however they are called.

The deconvnet (Zeiler & Fergus, arXiv 1311.2901) and guided backprop differ from the plain
gradient only at rectifiers: the deconvnet passes back the ReLU of the incoming signal
("rectify"), guided backprop masks by the forward activation AND rectifies, the gradient only
masks. Networks call their rectifiers as modules (``nn.ReLU``, ``nn.ReLU6``) or as functions
(``F.relu``, ``torch.relu``, ``x.relu_()``, ``F.relu6``, ``F.hardtanh(x, 0, 6)``: torchvision's
GoogLeNet and Inception v3 do), so the rules are applied where every one of those ends up: a
``TorchFunctionMode`` sees each call of the functions below while it is active and replaces it
by a custom autograd Function with the method's backward. ``nn.ReLU`` and ``nn.ReLU6`` call
``F.relu`` and ``F.hardtanh``, so modules need nothing more.

A capped rectifier ``min(max(x, 0), m)`` (ReLU6: m = 6; ``hardtanh(x, 0, m)``) is a ReLU followed
by a cap. The ReLU part gets the method's rule; the cap passes the signal back only where the
unit was not saturated (x < m), its plain gradient, the way a max-pool switch routes the signal
by the forward pass. So a network whose activations stay below the cap is projected as if its
ReLU6s were ReLUs, and swapping each ReLU6 for ``ReLU`` then ``clamp(max=m)`` gives the same
projection (the tests check this against Captum).

Other nonlinearities have no deconvnet rule: SiLU, GELU, Hardswish, sigmoid gates (squeeze-and-
excitation), tanh, ELU and kin. Their plain gradient is not the deconvnet, so ``Projector``
refuses "deconvnet" and "guided" for a layer whose backward path crosses one (found by walking
the autograd graph from the layer's output), and ``layers`` marks such layers. Arithmetic can be
one too: a product or quotient of two signals of the image (a hand-written h-swish), or a mask
computed from the image (``x * (x > 0)`` gets the rule, as the ReLU it is; any other mask is
refused): see `pipeline.interp.signals`. Only what leads back to the image counts: a
nonlinearity of parameters alone (``x * self.scale.exp()``) is a constant of the projection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from pipeline.interp.signals import PRODUCT, QUOTIENT, ImagePaths, Signals
from pipeline.models.evaluation import blank_image, evaluating

RULES = ("deconvnet", "guided")  # the methods that need a rule; "gradient" is autograd's own
REDIRECT = "redirect"  # not a projection method: feature visualization's gradient (Redirected)

# function -> in place; F.relu and F.hardtanh take inplace=... themselves
_RELUS = {F.relu: False, torch.relu: False, Tensor.relu: False,
          torch.relu_: True, Tensor.relu_: True, F.relu_: True}
_CAPPED = {F.relu6: 6.0}
_HARDTANH = {F.hardtanh: False, F.hardtanh_: True}
# F.threshold_ exists at run time; torch's functional.pyi leaves it out
_THRESHOLD = {F.threshold: False, F.threshold_: True}  # type: ignore[attr-defined]
# clamp(x, min=0[, max=m]) is a rectifier written as a clamp (ReLU6 often is, in ports)
_CLAMPS = {torch.clamp: False, Tensor.clamp: False, torch.clip: False, Tensor.clip: False,
           torch.clamp_: True, Tensor.clamp_: True, torch.clip_: True, Tensor.clip_: True,
           torch.clamp_min: False, Tensor.clamp_min: False, torch.clamp_min_: True,
           Tensor.clamp_min_: True}
_UNRULED = {
    F.silu: "SiLU", F.gelu: "GELU", F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid",
    torch.sigmoid: "sigmoid", Tensor.sigmoid: "sigmoid", torch.sigmoid_: "sigmoid",
    Tensor.sigmoid_: "sigmoid", F.sigmoid: "sigmoid", torch.special.expit: "sigmoid",
    torch.tanh: "tanh", Tensor.tanh: "tanh",
    torch.tanh_: "tanh", Tensor.tanh_: "tanh", F.tanh: "tanh", F.elu: "ELU", F.elu_: "ELU",
    F.selu: "SELU", F.celu: "CELU", F.leaky_relu: "LeakyReLU", F.leaky_relu_: "LeakyReLU",
    F.mish: "Mish", F.softplus: "Softplus", F.prelu: "PReLU", F.glu: "GLU",
    F.logsigmoid: "LogSigmoid", F.rrelu: "RReLU", F.softsign: "Softsign",
    F.tanhshrink: "Tanhshrink",
}
# Autograd nodes of nonlinearities, for those called where the mode cannot see them (C++,
# TorchScript, a function not listed above): met on a layer's backward path, they refuse it.
_NONLINEAR_NODES = {
    "Relu": "relu", "Threshold": "threshold", "Hardtanh": "hardtanh", "Clamp": "clamp",
    "ClampMin": "clamp", "ClampMax": "clamp", "Maximum": "maximum", "Minimum": "minimum",
    "Sigmoid": "sigmoid", "Tanh": "tanh", "Silu": "SiLU", "Gelu": "GELU",
    "Hardswish": "Hardswish", "Hardsigmoid": "Hardsigmoid", "Elu": "ELU", "LeakyRelu": "LeakyReLU",
    "RreluWithNoise": "RReLU", "Softplus": "Softplus", "Mish": "Mish", "Prelu": "PReLU",
    "Exp": "exp", "Log": "log", "Pow": "pow", "Sqrt": "sqrt", "Rsqrt": "rsqrt", "Erf": "erf",
    "Softmax": "softmax", "LogSoftmax": "log_softmax", "Abs": "abs", "Reciprocal": "reciprocal",
    "Sign": "sign", "Sgn": "sign", "Round": "round", "Floor": "floor", "Ceil": "ceil",
}
# Normalisations are not gates: local response normalisation (AlexNet, ZFNet), BatchNorm,
# GroupNorm, LayerNorm pass the signal back as their gradient, as in Captum's deconvnet. Their
# calls are seen by the mode, so the powers and roots inside (pow in F.local_response_norm)
# are passed over as part of them, while the same operations anywhere else still refuse.
_NORMALISATIONS = (F.local_response_norm, F.batch_norm, F.layer_norm, F.group_norm,
                   F.instance_norm, F.rms_norm, F.normalize)


class _Rectify(torch.autograd.Function):
    """``clamp(x, 0, cap)`` forward (cap None: a ReLU); the method's rule backward."""

    @staticmethod
    def forward(ctx, x: Tensor, rule: str, cap: float | None,
                inplace: bool) -> Tensor:
        ctx.rule = rule
        # masks, not x: immune to later in-place edits of x (and x itself may be edited here);
        # the deconvnet's rectification needs no mask of the forward pass
        ctx.save_for_backward(x > 0 if rule != "deconvnet" else None,
                              x < cap if cap is not None else None)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(0, cap)
        return x.clamp(0, cap)

    @staticmethod
    def backward(ctx, grad: Tensor):
        positive, below_cap = ctx.saved_tensors
        if ctx.rule == REDIRECT:
            return _redirected(grad, positive, below_cap), None, None, None
        if ctx.rule in RULES:
            grad = grad.clamp(min=0)
        if ctx.rule != "deconvnet":
            grad = grad.masked_fill(~positive, 0)
        if below_cap is not None:
            grad = grad.masked_fill(~below_cap, 0)
        return grad, None, None, None


def _redirected(grad: Tensor, positive: Tensor, below_cap: Tensor | None) -> Tensor:
    """Lucid's ``redirected_relu_grad`` (feature visualization, :mod:`pipeline.featurevis`):
    the rectifier's own gradient, except for a batch element through which it passes nothing at
    all; there the incoming gradient passes, but not where it would push an input that is
    below zero (or above the cap) further out. The loss is minimised, so a positive gradient
    lowers the input. Each element of the batch decides for itself."""
    plain = grad.masked_fill(~positive, 0)
    if below_cap is not None:
        plain = plain.masked_fill(~below_cap, 0)
    blocked = ~plain.flatten(1).ne(0).any(dim=1) if grad.dim() > 1 else plain.ne(0).any()[None]
    if not bool(blocked.any()):  # most steps: every element gets a gradient
        return plain
    redirected = grad.masked_fill(~positive & (grad > 0), 0)
    if below_cap is not None:
        redirected = redirected.masked_fill(~below_cap & (grad < 0), 0)
    shape = (-1,) + (1,) * (grad.dim() - 1)
    return torch.where(blocked.reshape(shape), redirected, plain)


def rectifier(func: Callable, args: tuple, kwargs: dict) -> tuple[float | None, bool] | None:
    """(cap, in place) of a call of a rectifier that has rules (ReLU: cap None; ReLU6 and its
    hardtanh and clamp spellings: the cap), None for any other call."""
    found = _classify(func, args, kwargs)
    if found is None or found[1] != found[1]:  # nan: a nonlinearity without a rule
        return None
    return found[1], found[2]


class Ruled(TorchFunctionMode):
    """While active, every rectifier call (functional, method or module, in place or not) runs
    as itself forward and with ``rule``'s gradient backward (a method of ``RULES``, or
    ``REDIRECT``); nothing else is looked at (the projector's :class:`Nonlinearities` also
    reports every call, to refuse a layer whose path has no rule)."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = rectifier(func, args, kwargs)
        if found is not None and args and isinstance(args[0], Tensor):
            cap, inplace = found
            return _Rectify.apply(args[0], self.rule, cap, inplace)
        return func(*args, **kwargs)


class Redirected(Ruled):
    """Every rectifier with :func:`_redirected`'s gradient backward (feature visualization)."""

    def __init__(self) -> None:
        super().__init__(REDIRECT)


@dataclass(frozen=True)
class Nonlinearity:
    """One call of a nonlinearity during a forward pass: what it is, which module called it
    (the innermost running one; "" outside every module), its output, and whether a rule
    exists for it."""

    kind: str  # "ReLU", "ReLU6", "hardtanh(0, m)", or an unruled name such as "SiLU"
    module: str
    output: Tensor | None
    ruled: bool
    node: object = None  # the output's autograd node when it was made (later in-place ops
    #                     give the tensor a new one; this one stays on the graph's paths)
    operands: tuple = ()  # arithmetic (see pipeline.interp.signals): a product's operands, a
    #                       mask's sources (autograd nodes or leaves) ...
    needed: int = 0  # ... of which this many must lead back to the image for it to count
    reason: str = ""  # what the arithmetic is, for the refusal


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: object) -> object:
    return kwargs.get(name, args[position] if len(args) > position else default)


def _classify(func: Callable, args: tuple, kwargs: dict) -> tuple[str, float | None, bool] | None:
    """(kind, cap, in place) of a rectifier call (cap None: a plain ReLU), (name, nan, False)
    of a nonlinearity without a rule, None for anything else."""
    if func in _RELUS:
        return "ReLU", None, _RELUS[func] or bool(_argument(args, kwargs, 1, "inplace", False))
    if func in _CAPPED:
        return "ReLU6", _CAPPED[func], bool(_argument(args, kwargs, 1, "inplace", False))
    if func in _HARDTANH:
        low = _argument(args, kwargs, 1, "min_val", -1.0)
        high = _argument(args, kwargs, 2, "max_val", 1.0)
        inplace = _HARDTANH[func] or bool(_argument(args, kwargs, 3, "inplace", False))
        if low == 0 and _number(high) and high > 0:
            return ("ReLU6" if high == 6 else f"hardtanh(0, {high:g})"), float(high), inplace
        return "hardtanh", float("nan"), False
    if func in _THRESHOLD:
        threshold = _argument(args, kwargs, 1, "threshold", None)
        value = _argument(args, kwargs, 2, "value", None)
        inplace = _THRESHOLD[func] or bool(_argument(args, kwargs, 3, "inplace", False))
        return ("ReLU", None, inplace) if threshold == 0 and value == 0 else \
            ("threshold", float("nan"), False)
    if func in _CLAMPS:
        low = _argument(args, kwargs, 1, "min", None)
        high = None if "clamp_min" in func.__name__ else _argument(args, kwargs, 2, "max", None)
        if _number(low) and low == 0 and (high is None or (_number(high) and high > 0)):
            return (("ReLU", None, _CLAMPS[func]) if high is None else
                    (f"clamp(0, {high:g})", float(high), _CLAMPS[func]))
        return None  # another clamp: its autograd node speaks for it (see first_unruled)
    if func in _UNRULED:
        return _UNRULED[func], float("nan"), False
    return None


class Nonlinearities(TorchFunctionMode):
    """While active: apply ``rule`` at every rectifier call (None: leave the forward as it
    is), and report each rectifier and unruled nonlinearity call to ``seen``.

    ``modules`` is the stack of running module names (kept by `ModuleStack`), so a call is
    attributed to the module that made it."""

    def __init__(self, rule: str | None, seen: Callable[[Nonlinearity], None] | None = None,
                 modules: list[str] | None = None) -> None:
        super().__init__()
        self.rule = rule
        self.seen = seen
        self.modules = modules if modules is not None else []
        self.signals = Signals()  # masks and zeros: rectifiers written as arithmetic
        #: a normalisation's output node -> its input's node: `first_unruled` steps over it.
        #: Clear it before each pass: that forgets the pass's masks too.
        self.normalised: dict[object, object] = _PassRecord(self.signals)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _NORMALISATIONS:
            output = func(*args, **kwargs)
            if isinstance(output, Tensor) and output.grad_fn is not None and args and \
                    isinstance(args[0], Tensor):
                self.normalised[output.grad_fn] = args[0].grad_fn
            return output
        found = _classify(func, args, kwargs)
        if found is None:
            return self._arithmetic(func, args, kwargs)
        kind, cap, inplace = found
        ruled = cap is None or cap == cap  # nan: no rule
        if ruled and self.rule is not None and isinstance(args[0], Tensor):
            output = _Rectify.apply(args[0], self.rule, cap, inplace)
        else:
            output = func(*args, **kwargs)
        if self.seen is not None and isinstance(output, Tensor):
            self.seen(Nonlinearity(kind, self.modules[-1] if self.modules else "", output,
                                   ruled, output.grad_fn))
        return output

    def _arithmetic(self, func, args: tuple, kwargs: dict):
        """A ReLU written with a mask gets the rule; a product of two signals, or a mask of the
        image applied otherwise, is reported (as an unruled call that counts only if its
        operands lead back to the image); anything else runs as it is."""
        module = self.modules[-1] if self.modules else ""
        rectifier = self.signals.rectifier(func, args, kwargs)
        if rectifier is None:
            output, use = self.signals.run(func, args, kwargs)
            if use is not None and self.seen is not None:
                self.seen(Nonlinearity(use.kind, module, use.output, False, use.node,
                                       use.operands, use.needed, use.reason))
            return output
        x, inplace = rectifier
        if self.rule is not None:
            output = _Rectify.apply(x, self.rule, None, inplace)
            result = None if func is Tensor.__setitem__ else output
        else:
            result = func(*args, **kwargs)
            output = x if func is Tensor.__setitem__ else result
        if self.seen is not None:
            self.seen(Nonlinearity("ReLU", module, output, True, output.grad_fn))
        return result


class _PassRecord(dict):
    """`Nonlinearities.normalised`: clearing it, as the projector does before each pass, also
    forgets the masks the pass made (they hold autograd nodes of its graph)."""

    def __init__(self, signals: Signals) -> None:
        super().__init__()
        self._signals = signals

    def clear(self) -> None:
        super().clear()
        self._signals.clear()


class ModuleStack:
    """Pre- and post-forward hooks on every submodule of ``model`` keeping ``names``, the stack
    of running modules (innermost last). A forward ended by an exception leaves names behind:
    call `reset` before each pass."""

    def __init__(self, model: nn.Module) -> None:
        self.names: list[str] = []
        self._handles = []
        for name, module in model.named_modules():
            if name:
                self._handles.append(module.register_forward_pre_hook(self._enter(name)))
                self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            self.names.append(name)
        return hook

    def _leave(self, module: nn.Module, args: tuple, output: object) -> None:
        if self.names:
            self.names.pop()

    def reset(self) -> None:
        self.names.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _unseen(node: object) -> str | None:
    """The name of the nonlinearity an autograd node computes, None for the linear and
    piecewise-linear-by-switches ones (conv, add, pooling, BatchNorm in eval, ...)."""
    name = type(node).__name__
    return _NONLINEAR_NODES.get(name[:name.rfind("Backward")]) if "Backward" in name else None


def first_unruled(output: Tensor | object, unruled: list[Nonlinearity],
                  normalised: dict[object, object] | None = None,
                  paths: ImagePaths | None = None) -> Nonlinearity | None:
    """The nonlinearity without a rule that the backward path of ``output`` (a tensor, or its
    autograd node recorded when it was made) crosses, walking the autograd graph back; None if
    there is none. In this order: the earliest (in forward order) of the unruled calls recorded
    in this pass; any nonlinearity the rules never saw (its node on the path: relu from C++,
    ``torch.exp``, ...); the earliest recorded product of two signals or mask of the image
    (see `pipeline.interp.signals`: a gate's sigmoid is named before the product that applies
    it); a product the rules never saw. Each counts only if it leads back to the image
    (``paths``, shared between calls on one graph). ``normalised``
    (`Nonlinearities.normalised`) maps a normalisation's output node to its input's: the walk
    goes straight there, past the operations the normalisation is made of."""
    normalised = normalised or {}
    paths = paths or ImagePaths()
    start = output.grad_fn if isinstance(output, Tensor) else output
    if start is None:
        return None
    order: dict[object, int] = {}
    for i, call in enumerate(unruled):
        if call.node is not None:
            order.setdefault(call.node, i)
    seen: set[object] = {start}
    frontier: list[Any] = [start]  # autograd nodes (each has next_functions)
    crossed: list[int] = []
    unseen: Nonlinearity | None = None
    product: Nonlinearity | None = None
    while frontier:
        node = frontier.pop()
        if node in order:
            crossed.append(order[node])
        elif node not in normalised:
            if unseen is None and (name := _unseen(node)) is not None and paths.reaches(node):
                unseen = Nonlinearity(name, "", None, False, node)
            if product is None and (kind := paths.product(node)) is not None:
                product = Nonlinearity(kind, "", None, False, node,
                                       reason=QUOTIENT if kind == "div" else PRODUCT)
        parents = [(normalised[node], 0)] if node in normalised else node.next_functions
        for parent, _ in parents:
            if parent is not None and parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    calls = [unruled[i] for i in sorted(crossed)]
    plain = next((c for c in calls if not c.needed and paths.reaches(c.node)), None)
    arithmetic = next((c for c in calls if c.needed and paths.count(c.operands) >= c.needed),
                      None)
    return plain or unseen or arithmetic or product


def refusal(layer: str, method: str, call: Nonlinearity,
            fix: str = 'use method = "gradient"') -> str:
    """The one-line message of a layer that ``method`` cannot project."""
    where = f" (in {call.module})" if call.module else \
        "" if call.output is not None else " (where the rules cannot see it)"
    what = f", {call.reason}" if call.reason else ""
    return (f"layer {layer!r}: its backward path crosses {call.kind}{where}{what}, for which "
            f"{method} has no rule; {fix} for this model, or analyse layers before it")


def unruled_layers(model: nn.Module, input_size: tuple[int, int],
                   names: list[str]) -> dict[str, Nonlinearity | None]:
    """For each module in ``names``: the first nonlinearity without a deconvnet rule on the
    backward path of its (last) output, or None. One forward pass with gradients on zeros."""
    outputs: dict[str, object] = {}  # module -> its last output's autograd node, then
    unruled: list[Nonlinearity] = []
    wanted = set(names)

    def keep(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, Tensor):
                outputs[name] = output.grad_fn
        return hook

    stack = ModuleStack(model)
    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if n in wanted]
    def note(call: Nonlinearity) -> None:
        if not call.ruled:
            unruled.append(call)

    mode = Nonlinearities("deconvnet", note, stack.names)
    try:
        with evaluating(model, grad=True), torch.enable_grad(), mode:
            model(blank_image(model, input_size).requires_grad_(True))
    finally:
        stack.remove()
        for handle in handles:
            handle.remove()
    paths = ImagePaths()  # one graph: what leads back to the image is worked out once
    return {name: first_unruled(outputs[name], unruled, mode.normalised, paths)
            if name in outputs else None for name in names}

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
the autograd graph from the layer's output), and ``layers`` marks such layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from pipeline.models.evaluation import blank_image, evaluating

RULES = ("deconvnet", "guided")  # the methods that need a rule; "gradient" is autograd's own

# (function, name, in place); F.relu and F.hardtanh take inplace=... themselves
_RELUS = {F.relu: False, torch.relu: False, Tensor.relu: False,
          torch.relu_: True, Tensor.relu_: True, F.relu_: True}
_CAPPED = {F.relu6: 6.0}
_UNRULED = {
    F.silu: "SiLU", F.gelu: "GELU", F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid",
    torch.sigmoid: "sigmoid", Tensor.sigmoid: "sigmoid", torch.sigmoid_: "sigmoid",
    Tensor.sigmoid_: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", Tensor.tanh: "tanh",
    torch.tanh_: "tanh", Tensor.tanh_: "tanh", F.tanh: "tanh", F.elu: "ELU", F.elu_: "ELU",
    F.selu: "SELU", F.celu: "CELU", F.leaky_relu: "LeakyReLU", F.leaky_relu_: "LeakyReLU",
    F.mish: "Mish", F.softplus: "Softplus", F.prelu: "PReLU", F.glu: "GLU",
    F.logsigmoid: "LogSigmoid", F.rrelu: "RReLU", F.softsign: "Softsign",
    F.tanhshrink: "Tanhshrink",
}


class _Rectify(torch.autograd.Function):
    """``clamp(x, 0, cap)`` forward (cap None: a ReLU); the method's rule backward."""

    @staticmethod
    def forward(ctx, x: Tensor, rule: str, cap: float | None,  # type: ignore[override]
                inplace: bool) -> Tensor:
        ctx.rule = rule
        # masks, not x: immune to later in-place edits of x (and x itself may be edited here)
        ctx.save_for_backward(x > 0, x < cap if cap is not None else None)
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(0, cap)
        return x.clamp(0, cap)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        positive, below_cap = ctx.saved_tensors
        if ctx.rule in RULES:
            grad = grad.clamp(min=0)
        if ctx.rule != "deconvnet":
            grad = grad.masked_fill(~positive, 0)
        if below_cap is not None:
            grad = grad.masked_fill(~below_cap, 0)
        return grad, None, None, None


@dataclass(frozen=True)
class Nonlinearity:
    """One call of a nonlinearity during a forward pass: what it is, which module called it
    (the innermost running one; "" outside every module), its output, and whether a rule
    exists for it."""

    kind: str  # "ReLU", "ReLU6", "hardtanh(0, m)", or an unruled name such as "SiLU"
    module: str
    output: Tensor
    ruled: bool


def _classify(func: Callable, args: tuple, kwargs: dict) -> tuple[str, float | None, bool] | None:
    """(kind, cap, in place) of a rectifier call, (name, nan, False) of an unruled one, else
    None."""
    if func in _RELUS:
        return "ReLU", None, _RELUS[func] or bool(kwargs.get("inplace", args[1:2] == (True,)))
    if func in _CAPPED:
        return "ReLU6", _CAPPED[func], bool(kwargs.get("inplace", args[1:2] == (True,)))
    if func is F.hardtanh:
        low = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
        high = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        inplace = bool(kwargs.get("inplace", args[3] if len(args) > 3 else False))
        if low == 0 and high > 0:
            return ("ReLU6" if high == 6 else f"hardtanh(0, {high:g})"), float(high), inplace
        return f"hardtanh({low:g}, {high:g})", float("nan"), False
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

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = _classify(func, args, kwargs)
        if found is None:
            return func(*args, **kwargs)
        kind, cap, inplace = found
        ruled = cap is None or cap == cap  # nan: no rule
        if ruled and self.rule is not None and isinstance(args[0], Tensor):
            output = _Rectify.apply(args[0], self.rule, cap, inplace)
        else:
            output = func(*args, **kwargs)
        if self.seen is not None and isinstance(output, Tensor):
            self.seen(Nonlinearity(kind, self.modules[-1] if self.modules else "", output,
                                   ruled))
        return output


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


def first_unruled(output: Tensor, unruled: list[Nonlinearity]) -> Nonlinearity | None:
    """The earliest (in forward order) of the unruled nonlinearity calls recorded in this pass
    that ``output``'s backward path crosses, found by walking the autograd graph back from
    ``output``; None if it crosses none."""
    if output.grad_fn is None or not unruled:
        return None
    order = {}
    for i, call in enumerate(unruled):
        if call.output.grad_fn is not None:
            order.setdefault(call.output.grad_fn, i)
    seen, frontier, crossed = {output.grad_fn}, [output.grad_fn], []
    while frontier:
        node = frontier.pop()
        if node in order:
            crossed.append(order[node])
        for parent, _ in node.next_functions:
            if parent is not None and parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return unruled[min(crossed)] if crossed else None


def refusal(layer: str, method: str, call: Nonlinearity,
            fix: str = 'use method = "gradient"') -> str:
    """The one-line message of a layer that ``method`` cannot project."""
    where = f" (in {call.module})" if call.module else ""
    return (f"layer {layer!r}: its backward path crosses {call.kind}{where}, for which "
            f"{method} has no rule; {fix} for this model, or analyse layers before it")


def unruled_layers(model: nn.Module, input_size: tuple[int, int],
                   names: list[str]) -> dict[str, Nonlinearity | None]:
    """For each module in ``names``: the first nonlinearity without a deconvnet rule on the
    backward path of its (last) output, or None. One forward pass with gradients on zeros."""
    outputs: dict[str, Tensor] = {}
    unruled: list[Nonlinearity] = []
    wanted = set(names)

    def keep(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, Tensor):
                outputs[name] = output
        return hook

    stack = ModuleStack(model)
    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if n in wanted]
    try:
        with evaluating(model, grad=True), torch.enable_grad(), Nonlinearities(
                "deconvnet", lambda call: call.ruled or unruled.append(call), stack.names):
            model(blank_image(model, input_size).requires_grad_(True))
    finally:
        stack.remove()
        for handle in handles:
            handle.remove()
    return {name: first_unruled(outputs[name], unruled) if name in outputs else None
            for name in names}

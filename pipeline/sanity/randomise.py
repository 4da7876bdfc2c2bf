"""Cascading randomisation of a network's weights (Adebayo et al. 2018, sec. 3.1).

A *weighted module* is one with parameters of its own (a convolution, a linear layer, a norm
layer's affine, and their biases); they are ordered as the forward pass first calls them. The
cascade starts at the top (the output): step 1 randomises every weighted module from the top
down to the module that computes the highest analysed layer (the last weighted module called
before that layer's output), step 2 continues down to the next analysed layer's module, and so
on; a last step randomises the rest when weighted modules lie below the lowest analysed layer.
So the last step is the *full* randomisation: every weighted module has new weights.

A module's new weights are its class's own initialisation (``reset_parameters()``, what a
freshly built module gets), drawn on the CPU from a generator seeded by the cascade's seed and
the module's name: a module gets the same weights at every step and on every device, and the
caller's random state is left as it was. A module without ``reset_parameters`` has the entries
of each of its parameters shuffled instead. The randomiser is a parameter, so a test can pass
one that keeps the weights (every figure is then exactly that of the trained network).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.evaluation import evaluating

#: Re-initialises one module in place, drawing from torch's default CPU generator.
Randomiser = Callable[[nn.Module], None]


def reset_weights(module: nn.Module) -> None:
    """The module's own initialisation; its parameters' entries shuffled when it has none."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            flat = param.reshape(-1)
            param.copy_(flat[torch.randperm(flat.numel())].reshape(param.shape))


def keep_weights(module: nn.Module) -> None:
    """A randomiser that changes nothing: every module "randomised" to itself."""


@dataclass(frozen=True)
class CascadeStep:
    """Step ``index`` (1 = the top) randomises ``modules``: every weighted module from the top
    down to ``down_to``, the module of analysed layer ``label`` ('' for the modules below every
    analysed layer)."""

    index: int
    down_to: str
    label: str
    modules: frozenset[str]


@dataclass(frozen=True)
class ForwardOrder:
    """The weighted modules in the order the forward pass first calls them, and per analysed
    module the weighted modules called before its (last) output."""

    weighted: tuple[str, ...]
    before: dict[str, frozenset[str]]


def forward_order(model: nn.Module, probe: torch.Tensor, analysed: Sequence[str]
                  ) -> ForwardOrder:
    """Run ``probe`` (one input image) through ``model`` once and record which weighted
    modules are called, in order, and which of them precede each analysed module's output."""
    named = dict(model.named_modules())
    weighted = [name for name, module in named.items()
                if any(True for _ in module.parameters(recurse=False))]
    calls: list[str] = []
    before: dict[str, frozenset[str]] = {}
    handles = []

    def started(name: str):  # when a call starts: a container's own weights may come first
        def hook(_module: nn.Module, _args: tuple) -> None:
            if name not in calls:
                calls.append(name)
        return hook

    def finished(name: str):  # its last call wins, as the projector's does
        def hook(_module: nn.Module, _args: tuple, _output: object) -> None:
            before[name] = frozenset(calls)
        return hook

    try:
        for name in weighted:
            handles.append(named[name].register_forward_pre_hook(started(name)))
        for name in dict.fromkeys(analysed):
            handles.append(named[name].register_forward_hook(finished(name)))
        with evaluating(model):
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return ForwardOrder(tuple(calls), {name: before.get(name, frozenset()) for name in analysed})


def cascade_steps(order: ForwardOrder, layers: Sequence[tuple[str, str]]) -> list[CascadeStep]:
    """The cascade over ``layers`` ((label, module) of each analysed layer), top first (module
    doc); empty for a network without weights."""
    position = {name: i for i, name in enumerate(order.weighted)}
    own: dict[int, str] = {}  # position of a layer's own module -> the first layer it computes
    for label, module in layers:
        below = order.before[module]
        if below:
            own.setdefault(max(position[name] for name in below), label)
    starts = sorted(own, reverse=True)
    if order.weighted and (not starts or starts[-1] > 0):
        starts.append(0)
    return [CascadeStep(index + 1, order.weighted[start], own.get(start, ""),
                        frozenset(order.weighted[start:]))
            for index, start in enumerate(starts)]


def reaches(step: CascadeStep, order: ForwardOrder, module: str) -> bool:
    """Whether ``step`` randomises a module that the analysed ``module``'s output depends on
    (one called before it); if not, its projections are those of the trained network, since
    a projection runs the network only up to its layer."""
    return bool(step.modules & order.before[module])


def module_seed(seed: int, name: str) -> int:
    """The seed of module ``name``'s new weights: from the cascade's seed and the name only."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Cascade:
    """A copy of ``model`` set to any step of the cascade: every module of the last step is
    randomised once (module doc), and a step copies each module's trained or new tensors."""

    def __init__(self, model: nn.Module, steps: Sequence[CascadeStep], seed: int,
                 randomise: Randomiser = reset_weights) -> None:
        self.model = model
        self.network = copy.deepcopy(model)
        names = set().union(*(step.modules for step in steps)) if steps else set()
        self._trained = {name: _own_tensors(model.get_submodule(name)) for name in names}
        self._random = {name: _randomised(model.get_submodule(name), module_seed(seed, name),
                                          randomise) for name in sorted(names)}

    def at(self, step: CascadeStep | None) -> nn.Module:
        """The network with ``step``'s modules randomised (None: the trained weights)."""
        with torch.no_grad():
            for name, trained in self._trained.items():
                source = self._random[name] if step is not None and name in step.modules \
                    else trained
                target = _own_tensors(self.network.get_submodule(name))
                for key, tensor in source.items():
                    target[key].copy_(tensor)
        return self.network


def _own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's own parameters and buffers (not its children's), by name."""
    return {**dict(module.named_parameters(recurse=False)),
            **{name: buffer for name, buffer in module.named_buffers(recurse=False)
               if buffer is not None}}


def _randomised(module: nn.Module, seed: int, randomise: Randomiser) -> dict[str, torch.Tensor]:
    """The module's own tensors after ``randomise``, drawn on the CPU under ``seed``."""
    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.random.default_generator.manual_seed(seed)
        randomise(fresh)
    trained = _own_tensors(module)
    return {name: tensor.detach().to(trained[name].device, trained[name].dtype).clone()
            for name, tensor in _own_tensors(fresh).items() if name in trained}

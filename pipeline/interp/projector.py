"""Project single activations back to pixel space (Zeiler & Fergus deconvnet, arXiv 1311.2901).

The deconvnet of the paper is the gradient of one activation with respect to the input, except
that every ReLU passes back the ReLU of the incoming signal ("rectify") instead of masking it by
the forward activation. Guided backprop masks AND rectifies; plain gradient only masks. Max-pool
"switches" and transposed convolutions are exactly what autograd already does, so all three
methods share one mechanism: while projecting "deconvnet" or "guided", a `TorchFunctionMode`
(`pipeline.interp.rules`) replaces every rectifier call, module or functional, ReLU or ReLU6, by
a custom autograd Function whose backward is the method's rule; "gradient" is autograd's own. A
layer whose backward path crosses a nonlinearity with no rule (SiLU, GELU, Hardswish, sigmoid
gates...) is refused with a one-line error rather than projected as a plain gradient.

Like captum: the model goes to the constructor and the data to the call. The forward pass stops
at the requested layer (a private exception raised from a hook), so the classifier never runs.
Every hook and training flag is restored in `finally`, also after an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from pipeline.device import out_of_memory
from pipeline.errors import UserError
from pipeline.interp import windows
from pipeline.interp.cones import Cones, Traced, cone_graph, trace
from pipeline.interp.receptive_field import ReceptiveField, module_call_counts, receptive_fields
from pipeline.interp.rules import (
    RULES,
    ModuleStack,
    Nonlinearities,
    first_unruled,
    refusal,
)
from pipeline.interp.sharing import identical
from pipeline.interp.sharing import share as _share
from pipeline.interp.windows import WindowPlan
from pipeline.models.evaluation import evaluating

METHODS = ("deconvnet", "guided", "gradient")


class _Stop(Exception):
    """Raised from the target layer's hook to end the forward pass early."""


def _layer_names_hint(model: nn.Module) -> str:
    names = [n for n, _ in model.named_modules() if n]
    shown = ", ".join(names[:20])
    more = f", ... ({len(names)} in all)" if len(names) > 20 else f" ({len(names)} in all)"
    return shown + more


class Projector:
    """Back-projects single feature-map activations of `model` to pixel space.

    `method` is "deconvnet" (the paper), "guided" (guided backprop) or "gradient" (plain
    backprop). Requests are processed in batches of `batch_size`. Requests on identical images in
    a batch share one forward pass when that saves work: one forward on the distinct images,
    then one backward per "round" (the r-th request of every image). In eval mode a request's
    projection depends only on its own image and seed, so this equals the unshared result
    (bitwise in our CPU measurements; ~1.5-1.9x faster with 8 requests per image).

    With `cones` (default), every request is projected on its cone, each layer computed only
    where the unit reads it (`pipeline.interp.cones`), once the layer's cones passed a one-time
    self-check per (layer, input size). Where a model has no cones (untraceable, or a path that
    reads the whole map) and with `windowed` (default), requests are projected on windows
    (crops of the input) around their receptive fields when that pays and their own one-time
    self-check passed: exact, see `pipeline.interp.windows`. Otherwise, the full-image path
    above is used. `windowed=False` turns both off (the reference the tests compare with).
    """

    def __init__(
        self, model: nn.Module, method: str = "deconvnet", batch_size: int = 64,
        windowed: bool = True, cones: bool = True,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown projection method {method!r}; use one of {METHODS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.method = method
        self.batch_size = batch_size
        self.windowed = windowed
        self.cones = cones and windowed
        # (layer, H, W) -> layer output shape once crops passed the self-check, None if failed
        self._verified: dict[tuple[str, int, int], tuple[int, ...] | None] = {}
        self._fields: dict[tuple[int, int], dict[str, ReceptiveField]] = {}
        self._counts: dict[str, int] = {}  # calls per forward, per requested layer
        self._fx_counts: dict[str, int] | None = None
        self._traced = False
        self._ruled: set[str] = set()  # layers whose backward path has a rule everywhere
        # (layer, H, W) -> cones once checked (None: none, or they failed the check)
        self._cone_checked: dict[tuple[str, int, int], Cones | None] = {}
        self._cone_shapes: dict[tuple[str, int, int], tuple[int, ...]] = {}
        self._cone_traces: dict[tuple[int, int], Traced | None] = {}  # input size -> fx graph

    # ----------------------------------------------------------------------------------------
    def project(self, images: Tensor, layer: str, units: Tensor, positions: Tensor,
                image_of: Tensor | None = None) -> Tensor:
        """Projection of activation `layer_output[b, units[b], y, x]` of every request b.

        images: [B, 3, H, W]; units: [B] long; positions: [B, 2] long (y, x) in the layer's
        output map. The seed is the activation's own value, every other activation is zero.
        Or images: [I, 3, H, W] and image_of: [B] long, request b's image: requests on one
        image then share it, not a copy each. Returns [B, 3, H, W] float32 on the images'
        original device.
        """
        module = self._module(layer)
        b = _request_count(images, image_of)
        if images.dim() != 4 or units.shape != (b,) or positions.shape != (b, 2):
            raise ValueError(
                f"expected images [B,3,H,W] (or [I,3,H,W] and image_of [B] in 0..I-1), units "
                f"[B], positions [B,2]; got {tuple(images.shape)}, {tuple(units.shape)}, "
                f"{tuple(positions.shape)}"
                + ("" if image_of is None else f", image_of {tuple(image_of.shape)} "
                                               f"{image_of.dtype}"))
        out = torch.empty((b, *images.shape[1:]), dtype=torch.float32, device=images.device)
        if b == 0:
            return out
        # the first request's image: what the one-time checks probe, whatever the mapping
        first = images[:1] if image_of is None else images[image_of[:1].to(images.device)]
        calls = self._calls(layer, first)
        cones = self._cones(layer, module, calls, first) if self.cones else None
        if cones is not None:
            self._project_cones(cones, images, units, positions, layer, out, image_of)
            return out
        if image_of is not None:  # the other paths take one image per request
            images = images[image_of.to(images.device)]
        field = self._field(layer, (images.shape[2], images.shape[3])) if self.windowed else None
        with self._hooked(module, calls) as state:
            plan, boxes = self._windows(state, images, units, positions, layer, field)
            if plan is not None:
                windows.project_windows(self._batch_projector(state, layer), images, units,
                                       positions, plan, boxes, out, self.batch_size)
            else:
                for start in range(0, b, self.batch_size):
                    sl = slice(start, start + self.batch_size)
                    proj = self._project_batch(state, images[sl], units[sl], positions[sl],
                                               layer, start)
                    out[sl] = proj.to(out.device, torch.float32)
        return out

    # ----------------------------------------------------------------------------------------
    def _cones(self, layer: str, module: nn.Module, calls: int, images: Tensor
               ) -> Cones | None:
        """The layer's cones at this input size when the model has them and they passed their
        one-time check on the first image: the probe units' cone projections equal their
        full-image ones (the checks and probes of :mod:`pipeline.interp.windows`)."""
        key = (layer, int(images.shape[2]), int(images.shape[3]))
        if key in self._cone_checked:
            return self._cone_checked[key]
        self._cone_checked[key] = None
        if key[1:] not in self._cone_traces:
            self._cone_traces[key[1:]] = trace(self.model, key[1:])
        cones = cone_graph(self._cone_traces[key[1:]], layer)
        if cones is None:
            return None
        device = self._device()
        dtype = next(self.model.parameters(), torch.empty(0)).dtype
        image = images[0].detach().to(device, dtype)
        with self._hooked(module, calls) as state:
            with torch.no_grad():
                fmap = self._forward(state, image[None], layer)[0]
            probes = windows.probe_positions(fmap.abs().amax(dim=0))
            if not probes:
                return None
            positions = torch.tensor(probes, dtype=torch.long)
            units = torch.stack([fmap[:, y, x].abs().argmax() for y, x in probes]).cpu()
            batch = image[None].expand(len(probes), -1, -1, -1)
            full = self._project_batch(state, batch, units, positions, layer, 0)
        try:
            with evaluating(self.model, grad=True):
                cone = cones.project(batch, units, positions, self._rule())
        except Exception as error:  # noqa: BLE001 - an op that will not run on a box: the others
            if out_of_memory(error):  # not a reason to take a path that needs more memory
                raise
            return None
        if windows.agree(full, cone):
            self._cone_checked[key] = cones
            self._cone_shapes[key] = tuple(fmap.shape)
        else:
            windows.say_disagreement(layer, "its cones", full, cone)
        return self._cone_checked[key]

    def _project_cones(self, cones: Cones, images: Tensor, units: Tensor, positions: Tensor,
                       layer: str, out: Tensor, image_of: Tensor | None) -> None:
        """Every request on its cone, ``batch_size`` at a time, into ``out``."""
        shape = self._cone_shapes[(layer, int(images.shape[2]), int(images.shape[3]))]
        units, positions = units.cpu().long(), positions.cpu().long()
        _check(shape, units, positions, layer, 0)
        device = self._device()
        dtype = next(self.model.parameters(), torch.empty(0)).dtype
        with evaluating(self.model, grad=True):
            shared = None if image_of is None else images.detach().to(device, dtype)
            which = None if image_of is None else image_of.cpu().tolist()
            for start in range(0, out.shape[0], self.batch_size):
                sl = slice(start, start + self.batch_size)
                batch = images[sl].detach().to(device, dtype) if shared is None else shared
                of = None if which is None else which[sl]
                if out.device == device:
                    cones.project(batch, units[sl], positions[sl], self._rule(), out[sl], of)
                else:
                    out[sl] = cones.project(batch, units[sl], positions[sl], self._rule(),
                                            image_of=of).to(out.device)

    def _rule(self) -> str | None:
        """The rule the cones apply at rectifiers (None: autograd's own gradient)."""
        return self.method if self.method in RULES else None

    def _module(self, layer: str) -> nn.Module:
        try:
            module = self.model.get_submodule(layer) if layer else None
        except AttributeError:
            module = None
        if module is None:
            raise UserError(
                f"unknown layer {layer!r}: use a dotted module name of the model, e.g. "
                f"{_layer_names_hint(self.model)}"
            )
        return module

    def _calls(self, layer: str, probe: Tensor) -> int:
        """How many times `layer` runs per forward; its LAST call is the one recorded."""
        if layer not in self._counts:
            if not self._traced:
                self._fx_counts = module_call_counts(self.model)
                self._traced = True
            if self._fx_counts is not None:  # containers are not fx leaves: called once
                self._counts[layer] = max(1, self._fx_counts.get(layer, 1))
            else:
                self._counts[layer] = self._count_by_forward(layer, probe)
        return self._counts[layer]

    def _count_by_forward(self, layer: str, probe: Tensor) -> int:
        """Untraceable model: count calls in one full forward pass of a single image."""
        counter = [0]
        handle = self._module(layer).register_forward_hook(
            lambda *_: counter.__setitem__(0, counter[0] + 1))
        try:
            with evaluating(self.model):
                self.model(probe.to(self._device()))
        finally:
            handle.remove()
        return max(1, counter[0])

    def _field(self, layer: str, hw: tuple[int, int]) -> ReceptiveField | None:
        """The layer's receptive field at input size hw (None if unknown); computed before the
        hooks go in, since it runs its own forward pass."""
        if hw not in self._fields:
            try:
                self._fields[hw] = receptive_fields(self.model, hw)
            except Exception as error:  # geometry unknown: the full-image path needs none
                if out_of_memory(error):  # not a reason to take the path that needs more
                    raise
                self._fields[hw] = {}
        return self._fields[hw].get(layer)

    def _windows(
        self, state: dict, images: Tensor, units: Tensor, positions: Tensor, layer: str,
        field: ReceptiveField | None,
    ) -> tuple[WindowPlan | None, list[windows.Box]]:
        """(plan, window boxes) when windows pay and passed its self-check (run the first time
        it would pay for this layer and size); (None, []) for the full-image path."""
        if field is None:
            return None, []
        plan = WindowPlan(field, (int(images.shape[2]), int(images.shape[3])))
        boxes = plan.boxes(positions)
        if not plan.pays(identical(images)[0], boxes, self.batch_size):
            return None, []
        key = (layer, *plan.image_hw)
        if key not in self._verified:
            dtype = next(self.model.parameters(), torch.empty(0)).dtype
            self._verified[key] = windows.verify(
                self._batch_projector(state, layer), lambda x: self._forward(state, x, layer),
                images[0].detach().to(self._device(), dtype), plan, layer)
        shape = self._verified[key]
        if shape is None:
            return None, []
        _check(shape, units, positions, layer, 0)
        return plan, boxes

    def _batch_projector(self, state: dict, layer: str) -> windows.ProjectBatch:
        return lambda x, units, positions: self._project_batch(state, x, units, positions, layer, 0)

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @contextmanager
    def _hooked(self, target: nn.Module, calls: int) -> Iterator[dict]:
        """Apply the method's rule at every rectifier and install the stop hook; restore
        everything on exit."""
        state: dict = {"calls": 0, "expected": calls, "output": None, "unruled": []}
        ruled = self.method in RULES
        stack = ModuleStack(self.model) if ruled else None
        handles: list[RemovableHandle] = []

        def stop_hook(module: nn.Module, args: tuple, output: object) -> None:
            state["calls"] += 1
            if state["calls"] == calls:
                state["output"] = output
                raise _Stop

        def seen(call) -> None:
            if not call.ruled:
                state["unruled"].append(call)

        state["stack"] = stack
        state["mode"] = Nonlinearities(self.method, seen, stack.names) \
            if stack is not None else None  # (a stack only when ruled)
        try:
            handles.append(target.register_forward_hook(stop_hook))
            with evaluating(self.model, grad=True), state["mode"] or nullcontext():
                yield state
        finally:
            if stack is not None:
                stack.remove()
            for h in handles:
                h.remove()

    def _forward(self, state: dict, x: Tensor, layer: str) -> Tensor:
        state["calls"], state["output"], state["unruled"] = 0, None, []
        if state["stack"] is not None:
            state["stack"].reset()
            state["mode"].normalised.clear()  # this pass's graph only (and none kept alive)
        try:
            self.model(x)
        except _Stop:
            pass
        output = state["output"]
        if state["calls"] < state["expected"]:
            raise UserError(
                f"layer {layer!r} ran {state['calls']} of {state['expected']} times in the "
                "forward pass; choose a layer the model's forward actually uses"
            )
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise UserError(
                f"layer {layer!r} did not produce a 4-D feature map (got "
                f"{type(output).__name__}); choose a conv, pool or ReLU layer"
            )
        if self.method in RULES and layer not in self._ruled and torch.is_grad_enabled() \
                and x.requires_grad:
            blocker = first_unruled(output, state["unruled"], state["mode"].normalised)
            if blocker is not None:
                raise UserError(refusal(layer, self.method, blocker))
            self._ruled.add(layer)
        return output

    def _project_batch(
        self, state: dict, images: Tensor, units: Tensor, positions: Tensor, layer: str,
        offset: int,
    ) -> Tensor:
        device = self._device()
        units, positions = units.to(device).long(), positions.to(device).long()
        base, inverse, rounds = _share(images)
        dtype = next(self.model.parameters(), torch.empty(0)).dtype
        x = base.detach().to(device, dtype).requires_grad_(True)
        with torch.enable_grad():
            fmap = self._forward(state, x, layer)
            _check(tuple(fmap.shape[1:]), units, positions, layer, offset)
            result = torch.empty((images.shape[0], *x.shape[1:]), dtype=x.dtype, device=device)
            n_rounds = int(rounds.max()) + 1
            for r in range(n_rounds):
                req = (rounds == r).nonzero().flatten()
                img = inverse[req].to(device)
                u, yy, xx = units[req], positions[req, 0], positions[req, 1]
                seed = torch.zeros_like(fmap)
                seed[img, u, yy, xx] = fmap.detach()[img, u, yy, xx]
                (grad,) = torch.autograd.grad(
                    fmap, x, grad_outputs=seed, retain_graph=r < n_rounds - 1)
                result[req.to(device)] = grad[img]
        return result


def _request_count(images: Tensor, image_of: Tensor | None) -> int:
    """How many requests ``project`` was given: one per image, or ``image_of``'s length; -1
    when ``image_of`` is no 1-d integer tensor of indices into ``images``."""
    if image_of is None:
        return images.shape[0]
    if image_of.dim() != 1 or image_of.is_floating_point() or image_of.dtype == torch.bool:
        return -1
    inside = not len(image_of) or (0 <= int(image_of.min())
                                   and int(image_of.max()) < images.shape[0])
    return len(image_of) if inside else -1


def _check(
    shape: tuple[int, ...], units: Tensor, positions: Tensor, layer: str, offset: int
) -> None:
    c, h, w = shape
    bad = (units < 0) | (units >= c) | (positions[:, 0] < 0) | (positions[:, 0] >= h) \
        | (positions[:, 1] < 0) | (positions[:, 1] >= w)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"request {offset + i}: unit {int(units[i])} at (y, x) = "
            f"{tuple(positions[i].tolist())} is outside layer {layer!r}'s output of "
            f"{c} channels x {h} x {w}"
        )


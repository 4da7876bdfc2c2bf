"""Training and evaluating a classifier, resumable at epoch boundaries.

The optimiser is AdamW (fast and robust from scratch without batch norm) or, as in Zeiler &
Fergus, SGD with momentum: Adam's per-weight step normalisation whitens the first layer's
updates, so its filters stay speckled, while SGD's updates follow the (smooth) image
statistics. Optionally every conv filter is renormalised to a fixed RMS radius after each step,
as in the paper, which keeps single filters from dominating and lets weight decay shrink unused
ones. The learning rate follows a schedule of ``pipeline.models.schedules`` ('cosine' is a pure
function of the global step; 'plateau' keeps a small state that travels in the checkpoint), so
a run resumed from an epoch checkpoint follows the same rates as an uninterrupted one. Each
epoch also reseeds torch's global generator from ``(torch.initial_seed(), epoch)``: with the
caller's ``torch.manual_seed(seed)`` before both runs, shuffling, dropout and the random crops
and flips of augmentation (torchvision draws them from that generator, in this process when the
loader has no workers) of a resumed run match the uninterrupted run.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.atomic import write_bytes
from pipeline.models.evaluation import evaluating
from pipeline.models.schedules import make_schedule
from pipeline.progress import progress

Batch = tuple[torch.Tensor, torch.Tensor, Any]


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with momentum and L2 weight decay."""
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                               weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use 'adamw' or 'sgd'")


@torch.no_grad()
def renormalise_filters(model: nn.Module, radius: float) -> None:
    """Scale every conv filter (one output channel) whose RMS exceeds ``radius`` back to it.

    Zeiler & Fergus (2013, sec. 3) do this after each step so that no first-layer filter grows
    to dominate the input; filters inside the radius are left alone.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            weight = module.weight
            rms = weight.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            weight.mul_(torch.clamp(radius / rms.clamp_min(1e-12), max=1.0))


@torch.no_grad()
def scale_first_conv(model: nn.Module, factor: float) -> None:
    """Multiply the first convolution's weights by ``factor`` (before training).

    Its random init is white noise, and whatever of it survives training shows as speckle in
    the filters and in every deconvnet projection; a small init leaves only learned structure.
    """
    from pipeline.models.evaluation import first_conv

    first = first_conv(model)
    if first is not None:
        first[1].weight.mul_(factor)


@torch.no_grad()
def init_weights(model: nn.Module, std: float) -> None:
    """Draw every Conv2d and Linear weight from N(0, std^2) and set their biases to 0.

    Zeiler & Fergus's init (2013, sec. 3: std 0.01). The draws come from torch's global
    generator, so with ``torch.manual_seed(seed)`` first the same seed gives the same weights;
    call it before moving the model to an accelerator, whose generator draws other numbers.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def save_state(state: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename, every tensor
    moved to the CPU first. The one way the pipeline writes weights (and checkpoints): a file
    saved from CUDA tensors records their device, and a plain ``torch.load`` of it fails on a
    machine without CUDA, where a shared atlas's ``model.pt`` is often read.

    Serialised in memory first: torch's own file writer turns a full disk into a RuntimeError
    ("unexpected pos ..."), which would hide the kernel's OSError that the runner reports as one
    line; Python's file I/O raises that OSError, and a cut-off file never takes the final name.
    """
    buffer = io.BytesIO()
    torch.save(on_cpu(state), buffer)
    write_bytes(path, buffer.getbuffer())


def on_cpu(state: Any) -> Any:
    """``state`` (tensors, nested in dicts, lists and tuples) with every tensor on the CPU,
    detached; everything else as it is."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):  # an OrderedDict (a state dict) stays one, its metadata too
        moved = {key: on_cpu(value) for key, value in state.items()}
        if isinstance(state, OrderedDict):
            ordered = OrderedDict(moved)
            if hasattr(state, "_metadata"):
                ordered._metadata = state._metadata  # type: ignore[attr-defined]
            return ordered
        return moved
    if isinstance(state, list):
        return [on_cpu(value) for value in state]
    if isinstance(state, tuple):
        values = [on_cpu(value) for value in state]
        return type(state)(*values) if hasattr(state, "_fields") else tuple(values)
    return state


def train_step(model: nn.Module, optim: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, lr: float, filter_radius: float = 0.0) -> torch.Tensor:
    """One optimisation step at learning rate ``lr``; returns the batch's mean loss, a tensor
    on the model's device (reading it waits for the device: the caller sums them there).

    With ``filter_radius`` > 0 the conv filters are renormalised right after the step (see
    :func:`renormalise_filters`), so no filter is ever seen, or saved, beyond the radius.
    """
    for group in optim.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(images), labels)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    if filter_radius > 0:
        renormalise_filters(model, filter_radius)
    return loss.detach()


def _epoch_seed(base_seed: int, epoch: int) -> int:
    return (base_seed * 1_000_003 + epoch) % (2**63 - 1)


def evaluate(model: nn.Module, loader: Iterable[Batch | None], device: torch.device) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` over ``loader`` (batches of image, label, index)."""
    correct = total = 0
    with evaluating(model):
        for batch in loader:
            if batch is None:  # every image of the batch unreadable
                continue
            images, labels = batch[0], batch[1]
            logits = model(images.to(device))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            total += len(labels)
    return correct / max(1, total)


def train_classifier(
    model: nn.Module,
    train_loader: Iterable[Batch | None],
    val_loader: Iterable[Batch | None],
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    device: torch.device,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    filter_radius: float = 0.0,
    schedule: str = "cosine",
    plateau_patience: int = 2,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    schedule_state: dict | None = None,
    resumed_metrics: dict | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train epochs ``start_epoch .. epochs-1``; ``epochs`` is the total of the whole run.

    After each epoch ``on_epoch_end(done, metrics)`` is called with ``done`` = epochs completed
    so far (the ``start_epoch`` to resume from) and ``metrics`` holding ``epoch`` (= done),
    ``train_loss``, ``val_accuracy``, ``lr`` (the rate of the epoch's last step),
    ``optimizer_state`` and ``schedule_state``. To resume, load the model weights, then pass
    ``start_epoch``, ``optimizer_state``, ``schedule_state`` and ``resumed_metrics`` (that
    epoch's metrics, without the two states) from that checkpoint: with no epoch left they are
    returned as they are, so a run resumed after its last epoch reports what an uninterrupted
    run did.
    ``optimizer`` is 'adamw' or 'sgd' (with ``momentum``); ``filter_radius`` > 0 renormalises
    conv filters after each step (see :func:`renormalise_filters`); ``schedule`` is 'cosine'
    (``lr`` is the peak) or 'plateau' (``lr`` is the first rate, divided by 10 after
    ``plateau_patience`` epochs without a better validation accuracy), see
    ``pipeline.models.schedules``.
    Returns the metrics of the last epoch (just the validation accuracy if no epoch was left
    and no ``resumed_metrics`` were given).
    """
    model.to(device)
    optim = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    if optimizer_state is not None:
        optim.load_state_dict(optimizer_state)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    rates = make_schedule(schedule, lr, epochs * steps_per_epoch, plateau_patience)
    if schedule_state is not None:
        rates.load_state_dict(schedule_state)
    base_seed = torch.initial_seed()  # read once: manual_seed below would change it
    metrics: dict = dict(resumed_metrics) if resumed_metrics else {
        "epoch": start_epoch, "train_loss": float("nan"), "lr": 0.0}
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(_epoch_seed(base_seed, epoch))
        model.train()
        # summed on the device, read once per epoch: no wait for the GPU at every step (float64
        # where the device has it: the same sum, to the bit, as Python floats of each loss)
        loss_sum = torch.zeros((), dtype=torch.float32 if device.type == "mps"
                               else torch.float64, device=device)
        seen, step_lr = 0, 0.0
        batches = progress(train_loader, desc=f"train epoch {epoch + 1}/{epochs}",
                           total=steps_per_epoch, unit="batch")
        for i, batch in enumerate(batches):
            if batch is None:  # every image of the batch unreadable
                continue
            images = batch[0].to(device, non_blocking=True)  # pinned on CUDA: no wait
            labels = batch[1].to(device, non_blocking=True)
            step_lr = rates.rate(epoch * steps_per_epoch + i)
            loss = train_step(model, optim, images, labels, step_lr, filter_radius)
            loss_sum += loss.to(loss_sum.dtype) * len(labels)
            seen += len(labels)
        metrics = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, seen),
                   "lr": step_lr}
        metrics["val_accuracy"] = evaluate(model, val_loader, device)
        rates.epoch_end(metrics["val_accuracy"])
        metrics["optimizer_state"] = optim.state_dict()
        metrics["schedule_state"] = rates.state_dict()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, metrics)
    if "val_accuracy" not in metrics:
        metrics["val_accuracy"] = evaluate(model, val_loader, device)
    metrics.setdefault("optimizer_state", optim.state_dict())
    metrics.setdefault("schedule_state", rates.state_dict())
    return metrics

"""Building a model whose every weight is about to be loaded, without drawing random ones first.

A model's constructor fills each parameter with random numbers (``nn.init``), and every stage
that analyses a trained model then overwrites them all from the weights file. The draws cost
0.27-0.33 s for AlexNet and 1.1 s for VGG16 on 2 CPU cores, in each of the six or seven stages
of ``run all`` that load the model. While :func:`unfilled` is active (in this thread: a torch
function mode), the random fills of ``nn.init`` that a mode sees leave the tensor as it was
allocated: AlexNet then builds in 0.02 s and VGG16 in 0.1 s (its convolutions' own
``kaiming_normal_``, which no mode sees, still draws).

Only where the load that follows is strict, so that every parameter and persistent buffer
comes from the file: torchvision's published weights, ``[model] checkpoint`` and the run's own
trained weights (:mod:`pipeline.models.loading`). timm's published weights keep the initial
values of a classifier resized to the data's classes, and the train stage trains from them:
both build as usual. A non-persistent buffer is not in any file, so a model that has one (a
constructor could fill it at random) is built again with its draws (:func:`unfilled_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# nn.init's random fills that hand their tensor to a torch function mode: the defaults of
# nn.Linear and nn.Conv2d, and what VGG draws its classifier with. The others (kaiming_normal_,
# trunc_normal_, ...) call a tensor's own ``normal_`` or ``uniform_`` unseen and draw as usual;
# skipping those instead would hang code that loops until its draws fall in a range
# (``trunc_normal_``'s rejection sampling).
_FILLS = {nn.init.uniform_, nn.init.normal_, nn.init.kaiming_uniform_}


class _Unfilled(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FILLS:  # nn.init hands its tensor over by keyword
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor):
                return tensor
        return func(*args, **kwargs)


@contextmanager
def unfilled() -> Iterator[None]:
    """Models built inside keep their parameters' allocated memory instead of random draws
    (module doc): load every one of them before using the model."""
    with _Unfilled():
        yield


def unfilled_model(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without random draws, for a strict load of every parameter and persistent
    buffer to follow; a model with a non-persistent buffer (which no load sets) is built with
    its draws."""
    with unfilled():
        model = build()
    if any(module._non_persistent_buffers_set for module in model.modules()):
        model = build()
    return model

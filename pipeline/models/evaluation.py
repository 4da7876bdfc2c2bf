"""Running a model for analysis without changing it: eval mode for the pass, modes restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module, grad: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (and turn autograd off unless ``grad``) for the block, then
    give every module back its own training flag, also after an error.

    Each module's flag, not ``model.train(was_training)``: a model handed to the analysis may
    hold some modules in eval mode while the rest trains (a frozen BatchNorm), and that mix
    must survive a pass made to look at it.
    """
    flags = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with contextlib.nullcontext() if grad else torch.no_grad():
            yield model
    finally:
        for module, flag in flags.items():
            module.training = flag


def blank_image(model: nn.Module, input_size: tuple[int, int]) -> torch.Tensor:
    """One all-zero image ``[1, C, H, W]`` on the model's device, in its dtype, with as many
    channels as the first convolution reads (3 without one): the input of a pass that only
    looks at the shapes of what the modules output."""
    from torch import nn

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    channels = first.in_channels if first is not None else 3
    return torch.zeros(1, channels, *input_size, device=device, dtype=dtype)

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
    channels as the model reads (:func:`input_channels`): the input of a pass that only looks
    at the shapes of what the modules output."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    return torch.zeros(1, input_channels(model, input_size), *input_size, device=device,
                       dtype=dtype)


class _Reached(Exception):
    """Raised by a hook to stop a pass at the first convolution it reaches."""


def input_channels(model: nn.Module, input_size: tuple[int, int] = (64, 64)) -> int:
    """The channels of the image the model reads: those of the first convolution the forward
    pass reaches (a model may register its stem after its head), found by stopping a pass
    there; of the first registered one if that pass fails first; 3 without a
    convolution."""
    from torch import nn

    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs:
        return 3

    def stop(module: nn.Module, args: tuple) -> None:
        raise _Reached(module)

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    handles = [conv.register_forward_pre_hook(stop) for conv in convs]
    try:
        with torch.no_grad():  # nothing past the pre-hook of the first convolution runs
            model(torch.zeros(1, convs[0].in_channels, *input_size, device=device, dtype=dtype))
    except _Reached as reached:
        return int(reached.args[0].in_channels)
    except Exception:  # noqa: BLE001 - a model that cannot run on meta: the registered order
        pass
    finally:
        for handle in handles:
            handle.remove()
    return int(convs[0].in_channels)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``nn.Conv2d`` in the model's order, with its dotted name (None if it has
    none): the layer whose filters look at pixels, shown as the paper's Figure 6."""
    return next(((name, module) for name, module in model.named_modules()
                 if isinstance(module, nn.Conv2d)), None)

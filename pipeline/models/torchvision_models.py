"""torchvision's classification models by name, with their weights enums resolved offline.

Weights load from the torch hub cache (``$TORCH_HOME/hub/checkpoints``) when the file is there;
otherwise torchvision downloads them if ``[model] download`` allows, and a failure names the exact
file and folder, so a user on an offline GPU box knows what to copy where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:
    from torch import nn
    from torchvision.models import WeightsEnum


#: Set to 1 to forbid downloads whatever the workflow says (an offline cluster, the tests).
OFFLINE_VARIABLE = "DECONV_ATLAS_OFFLINE"


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (not detection or video models)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def build_torchvision_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A torchvision classification model with freshly initialised weights (no download)."""
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def resolve_weights(model: str, weights: str, source: str) -> WeightsEnum:
    """``weights`` ('DEFAULT', 'IMAGENET1K_V1' or 'AlexNet_Weights.IMAGENET1K_V1') as an enum."""
    import torchvision

    if model not in torchvision_names():
        raise UserError(f"{source}: [model] weights is only for torchvision models, and "
                        f"'{model}' is not one; use [model] checkpoint instead")
    enum = torchvision.models.get_model_weights(model)
    key = weights.split(".")[-1]
    if key == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        valid = ", ".join(["DEFAULT", *enum.__members__])
        raise UserError(f"{source}: [model] weights '{weights}' is not a weight of {model}; "
                        f"choose one of {valid}") from None


def cached_weights_file(weights: WeightsEnum) -> Path:
    """Where torchvision keeps (or would keep) this weights file in the torch hub cache."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def cached_or_refused(weights: WeightsEnum, download: bool) -> Path | None:
    """The weights file in the hub cache; None if it is not there but may be downloaded; a
    ``UserError`` naming the file and the folder if it is not there and downloads are off."""
    path = cached_weights_file(weights)
    if path.is_file():
        return path
    if not download or os.environ.get(OFFLINE_VARIABLE) == "1":
        raise UserError(f"{path.name}: weights not in the torch hub cache and downloads are off; "
                        f"put the file in {path.parent} (TORCH_HOME sets the cache), or give a "
                        "state-dict file as [model] checkpoint")
    return None


def load_torchvision_model(model: str, weights: WeightsEnum, download: bool) -> nn.Module:
    """The model with its pretrained weights, read from the hub cache (or downloaded)."""
    import torchvision

    from pipeline.models.unfilled import unfilled_model

    path = cached_weights_file(weights)
    cached_or_refused(weights, download)
    try:
        # the builder loads the weights strictly: no random draws before (unfilled.py)
        return unfilled_model(lambda: torchvision.models.get_model(model, weights=weights))
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a cut file a RuntimeError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path.name}: could not load the weights ({reason}); download "
                        f"{weights.url} into {path.parent}, or set [model] checkpoint") from None

"""The model's classes, and how the data's class folders map onto them.

Labels are stored in the model's class order, so accuracy and "top class" mean the same thing
for the data and the network. An ImageNet model's order is the sorted list of the 1000 wnids
(``imagenet_wnids.txt``); a folder named by wnid maps to that index even when only a few classes
are present. A model trained in this run, or one whose classes are not ImageNet's, takes the
folders' own sorted order.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd

from pipeline.errors import UserError


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in the index order of torchvision's models."""
    text = resources.files("pipeline.data").joinpath("imagenet_wnids.txt").read_text()
    return tuple(text.split())


def imagenet_names() -> tuple[str, ...]:
    """Readable names of the 1000 ImageNet-1k classes, in index order."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def class_table(folders: list[str], root: Path, categories: list[str] | None, trains: bool,
                workflow_file: str) -> tuple[pd.DataFrame, list[int]]:
    """(the model's classes as ``label, name, wnid`` rows, model label of each folder).

    ``categories``: the class names of the published weights analysed (None without);
    ``trains``: the workflow trains its own model, whose classes are the folders."""
    names = categories
    wnids = imagenet_wnids()
    if trains or (names is None and not set(folders) <= set(wnids)):
        return pd.DataFrame({"label": range(len(folders)), "name": folders,
                             "wnid": [f if f in wnids else "" for f in folders]}), \
            list(range(len(folders)))
    names = names or list(imagenet_names())
    if len(names) != len(wnids):
        raise UserError(f"{workflow_file}: the weights' {len(names)} classes are not "
                        "ImageNet-1k's; use an ImageNet-1k model or [model] checkpoint")
    table = pd.DataFrame({"label": range(len(wnids)), "name": names, "wnid": wnids})
    if set(folders) <= set(wnids):
        index = {wnid: i for i, wnid in enumerate(wnids)}
    elif set(folders) <= set(names):
        index = {name: i for i, name in enumerate(names)}
    else:
        odd = [f for f in folders if f not in wnids and f not in names][:3]
        raise UserError(f"{root}: class folders {odd} are neither ImageNet wnids (like "
                        "n01440764) nor the model's class names; rename them by wnid")
    return table, [index[folder] for folder in folders]


# Coarse groups of ImageNet-1k classes (inclusive index ranges, torchvision's class order), so
# that searching the atlas for "dog" finds units whose top images are mostly dogs although no
# dog breed's name contains the word.
IMAGENET_GROUPS: dict[str, tuple[tuple[int, int], ...]] = {
    "dog": ((151, 268),),
    "cat": ((281, 285),),
    "big cat": ((286, 293),),
    "bird": ((7, 24), (80, 100), (127, 146)),
    "fish": ((0, 6), (389, 397)),
    "snake": ((52, 68),),
    "primate": ((365, 384),),
}


def class_groups(classes: pd.DataFrame) -> dict[str, tuple[int, ...]]:
    """Named groups of class labels, for a class table that is ImageNet-1k's (else none)."""
    if "wnid" not in classes or tuple(classes["wnid"]) != imagenet_wnids():
        return {}
    return {name: tuple(label for low, high in ranges for label in range(low, high + 1))
            for name, ranges in IMAGENET_GROUPS.items()}

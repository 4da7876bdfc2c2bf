"""Reading an image folder laid out as ``root/<class_name>/<image file>``.

The scan is sorted (class folders, then files) so image ids and labels are stable across runs
and machines: the atlas refers to images by ``image_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


def is_image_file(path: Path) -> bool:
    """True for a regular file whose suffix is in IMAGE_EXTENSIONS, in any letter case."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(
        "."
    )


def scan_image_folder(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """List the images under ``root`` with one sub-folder per class.

    Returns a table with ``image_id`` (0..N-1 in sorted order), ``path`` (POSIX, relative to
    ``root``) and ``label`` (index into the sorted class names), and the class names.
    Every class folder counts, even an empty one, so that a train and a val folder with the
    same class folders get the same labels.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; create it with one sub-folder "
                        "per class, or fix the data path in the workflow file")
    classes: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.rglob("*") if is_image_file(p))
        label = len(classes)
        classes.append(class_dir.name)
        paths.extend(p.relative_to(root).as_posix() for p in files)
        labels.extend([label] * len(files))
    if not paths:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise UserError(f"image folder {root} has no images; put files ({exts}) in one "
                        "sub-folder per class, e.g. <root>/cat/001.png")
    frame = pd.DataFrame({
        "image_id": np.arange(len(paths), dtype=np.int64),
        "path": pd.Series(paths, dtype=object),
        "label": np.asarray(labels, dtype=np.int64),
    })
    return frame, classes


class ImageDataset(Dataset):
    """Images at ``root / paths[i]`` with ``labels[i]``; item ``i`` is ``(tensor, label, i)``.

    The index is returned so that batch results (activations, top-k) can be mapped back to
    ``image_id`` without a second lookup table.
    """

    def __init__(self, root: Path, paths: Sequence[str], labels: Sequence[int],
                 transform: Callable[[Image.Image], torch.Tensor]) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = [int(v) for v in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        """The untransformed RGB image, e.g. for showing the original patch in the atlas."""
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read image {path}: {exc}; remove or replace the file") from exc

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.load(i)), self.labels[i], i

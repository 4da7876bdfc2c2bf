"""Reading images so that one bad file never stops a 50,000-image run."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pipeline.data.images import ImageDataset


def unreadable_reason(error: BaseException, root: Path) -> str:
    """One line saying why a file could not be read, from the error PIL or the transform raised;
    the data root is cut out so the reason can be shown in a shared atlas."""
    cause = error.__cause__ or error
    text = " ".join(str(cause).split()).replace(f"{root}{os.sep}", "") or "unreadable"
    return f"{type(cause).__name__}: {text}"[:300]


class TolerantImages(Dataset):
    """Item ``i`` is ``(image, i, reason)``: an unreadable file (truncated, empty, not an image,
    undecodable) gives a zero image of ``shape`` (and ``dtype``: that of the readable ones, so
    a batch collates) and the reason, and is recorded as skipped."""

    def __init__(self, images: ImageDataset, shape: tuple[int, int, int],
                 dtype: torch.dtype = torch.float32) -> None:
        self.images = images
        self.shape = shape
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        try:
            image, _, _ = self.images[i]
        except Exception as error:  # noqa: BLE001 - any decoding failure means "skip this file"
            reason = unreadable_reason(error, self.images.root)
            return torch.zeros(self.shape, dtype=self.dtype), i, reason
        return image, i, ""

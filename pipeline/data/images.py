"""Reading an image folder laid out as ``root/<class_name>/<image file>``.

The scan is sorted (class folders, then files) so image ids and labels are stable across runs
and machines: the atlas refers to images by ``image_id``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.atomic import read_json, write_json
from pipeline.errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif",
                                               ".tiff"})


@dataclass(frozen=True)
class DataWarning:
    """Something in the data folder the user should look at that does not stop the run.

    ``folder`` is relative to the data root and ``message`` names no absolute path, so both can
    be shown in a shared atlas.
    """

    kind: str  # "empty_folder" or "unlistable_folder"
    folder: str  # POSIX, relative to the data root
    message: str  # one line

    @classmethod
    def empty(cls, folder: str) -> DataWarning:
        """A class folder without images: it still counts as a class."""
        return cls("empty_folder", folder, f"class folder '{folder}' has no images")

    @classmethod
    def unlistable(cls, folder: str, error: OSError, what: str = "folder") -> DataWarning:
        """A folder whose listing failed with ``error`` (e.g. permission denied)."""
        cause = error.strerror or "cannot be read"  # strerror, unlike str(error), has no path
        return cls("unlistable_folder", folder, f"{what} '{folder}' cannot be listed "
                   f"({type(error).__name__}: {cause}); its images are left out")


def write_data_warnings(path: Path, warnings: Sequence[DataWarning]) -> None:
    """Write ``{"warnings": [{"kind", "folder", "message"}, ...]}`` to ``path``."""
    write_json(path, {"warnings": [asdict(warning) for warning in warnings]})


def read_data_warnings(path: Path) -> list[DataWarning]:
    """The warnings in ``path``; none when the file is absent (a run without any, or one made
    before the file existed) or unreadable."""
    payload = read_json(path)
    entries = payload.get("warnings", []) if isinstance(payload, dict) else []
    return [DataWarning(str(entry.get("kind", "")), str(entry.get("folder", "")),
                        str(entry["message"]))
            for entry in entries if isinstance(entry, dict) and entry.get("message")]


def is_image_file(path: Path) -> bool:
    """True for a listed entry whose suffix is in IMAGE_EXTENSIONS (any letter case), not hidden,
    that is a regular file or a link to one.

    A broken link, a link that loops, or an entry that may not be examined also counts: it gets
    an image_id, and the activations stage lists it as skipped with the reason instead of the
    file vanishing from the run unnoticed.
    """
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        return stat.S_ISREG(path.stat().st_mode)  # not a folder, pipe or device
    except FileNotFoundError:
        return path.is_symlink()
    except OSError:
        return True


def _images_under(root: Path, class_dir: Path,
                  warnings: list[DataWarning]) -> tuple[list[Path], bool]:
    """The image entries in ``class_dir`` and its sub-folders, and whether every folder could be
    listed; each one that could not becomes a warning. Linked sub-folders are not followed (as
    with pathlib's rglob, which this replaces because it skips unlistable folders silently)."""
    found: list[Path] = []
    listed = True
    folders = [class_dir]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = [(Path(entry.path), _is_real_dir(entry)) for entry in listing]
        except OSError as error:
            what = "class folder" if folder == class_dir else "folder"
            warnings.append(DataWarning.unlistable(folder.relative_to(root).as_posix(), error,
                                                   what))
            listed = False
            continue
        for path, is_dir in entries:
            if is_dir:
                folders.append(path)
            elif is_image_file(path):
                found.append(path)
    return sorted(found), listed


def _is_real_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def scan_image_folder(root: Path, warnings: list[DataWarning] | None = None,
                      ) -> tuple[pd.DataFrame, list[str]]:
    """List the images under ``root`` with one sub-folder per class.

    Returns a table with ``image_id`` (0..N-1 in sorted order), ``path`` (POSIX, relative to
    ``root``) and ``label`` (index into the sorted class names), and the class names.
    Every class folder counts, even an empty one, so that a train and a val folder with the
    same class folders get the same labels; an empty class folder, and a folder that cannot be
    listed, is appended to ``warnings`` (when given).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; create it with one sub-folder "
                        "per class, or fix the data path in the workflow file")
    warnings = [] if warnings is None else warnings
    classes: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files, listed = _images_under(root, class_dir, warnings)
        if listed and not files:
            warnings.append(DataWarning.empty(class_dir.name))
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


# Pillow's modes of more than 8 bits per channel, and the value that is full scale in each: a
# 16-bit PNG or TIFF opens as "I;16" (grey; "I" in older Pillow), 32-bit integers as "I", floats
# as "F" (taken to be 0..1). Pillow's own convert("RGB") clips these at 255, which shows a
# 0..65535 ramp as almost all white. (16-bit RGB PNGs Pillow already scales to "RGB".)
_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "F": 1.0}
#: The Pillow mode images are converted to for a network of that many input channels.
CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Modes Pillow converts to "L" and "RGBA" directly; others (CMYK, YCbCr, LAB, HSV) go through
# "RGB" first, so that every colour image reaches grey or RGBA the way an RGB image does.
_DIRECT = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa"})


def channel_mode(channels: int) -> str:
    """The Pillow mode of ``channels``-channel network input (:data:`CHANNEL_MODES`); a
    UserError for a count no image converts to."""
    if channels not in CHANNEL_MODES:
        raise UserError(f"the model's first convolution takes {channels} input channels; images "
                        "can be read as 1 (grey), 3 (RGB) or 4 (RGBA) channels: use a model "
                        "with one of those")
    return CHANNEL_MODES[channels]


def as_8bit(img: Image.Image) -> Image.Image:
    """``img`` decoded, at 8 bits per channel: more than 8 bits of grey is scaled to 8-bit "L"
    (v * 255 / full scale, rounded), not clipped. "I" images (signed 32-bit in Pillow: 16-bit
    files in older Pillow, 32-bit ones) count as 16-bit unless a value exceeds 65535, then as
    32-bit (full scale 2**31 - 1): decided per image, so a 32-bit image whose values all fit in
    16 bits is scaled as 16-bit. Every other mode is kept as it is."""
    if img.mode not in _FULL_SCALE and img.mode != "I":
        img.load()
        return img
    values = np.asarray(img, dtype=np.float64)
    full = _FULL_SCALE.get(img.mode) or (65535 if values.max(initial=0) <= 65535 else 2**31 - 1)
    grey = np.clip(np.rint(values * (255 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L")


def as_channels(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as the 8-bit input of a network with ``channels`` input channels (see
    :func:`as_8bit` for more than 8 bits). 1: grey "L", the luminance Pillow computes from RGB
    (alpha dropped); 3: "RGB" (greyscale, palette, alpha (dropped, not composited) and CMYK keep
    Pillow's conversion); 4: "RGBA", an image without alpha getting alpha 255."""
    mode = channel_mode(channels)
    img = as_8bit(img)
    if img.mode == mode:
        return img
    if channels != 3 and img.mode not in _DIRECT:
        img = img.convert("RGB")
    return img.convert(mode)


def as_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB: :func:`as_channels` with 3 channels."""
    return as_channels(img, 3)


class ToChannels:
    """A transform step: a PIL image -> :func:`as_channels` of it. A class (not a lambda), so
    that a transform holding it reaches DataLoader worker processes."""

    def __init__(self, channels: int) -> None:
        channel_mode(channels)  # refuse an impossible count when the transform is made
        self.channels = channels

    def __call__(self, img: Image.Image) -> Image.Image:
        return as_channels(img, self.channels)

    def __repr__(self) -> str:
        return f"ToChannels({self.channels})"


class IndexedImages(Protocol):
    """Images by id: ``images[i]`` starts with image ``i``'s network input and its true label
    (an :class:`ImageDataset`; a list of such tuples in tests)."""

    def __getitem__(self, i: int, /) -> tuple[Any, ...]: ...


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

    def read(self, i: int) -> Image.Image:
        """Image ``i`` decoded at 8 bits per channel in its own mode (:func:`as_8bit`): what
        the transform gets, whose first step converts it to the network's channels
        (:class:`ToChannels`, as every transform of
        :class:`~pipeline.models.preprocessing.Preprocessing` does)."""
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as img:
                return as_8bit(img)
        except (OSError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError) and path.is_symlink():
                # "No such file" about an entry that `ls` shows would mislead: name the link
                exc = FileNotFoundError(errno.ENOENT, "broken symbolic link (its target does "
                                        "not exist)", str(path))
            raise UserError(f"cannot read image {path}: {exc}; remove or replace the file") from exc

    def load(self, i: int, channels: int = 3) -> Image.Image:
        """The untransformed image as ``channels``-channel input (:func:`as_channels`), e.g.
        for showing the original."""
        return as_channels(self.read(i), channels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.read(i)), self.labels[i], i


class ReadableImages(Dataset):
    """``images`` with unreadable files left out of their batch instead of stopping training:
    item ``i`` of such a file is its path (a ``str``), which ``collate_readable`` takes out of
    the batch, so a broken link or a corrupt JPEG costs one image, not the run."""

    def __init__(self, images: ImageDataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | str:
        try:
            return self.images[i]
        except Exception:  # noqa: BLE001 - any decoding failure means "leave this one out"
            return self.images.paths[i]


class MemoryCached(Dataset):
    """``items`` with each item kept in memory once read, when all of them fit in ``budget``
    bytes of tensors (judged by the first item read; otherwise nothing is kept).

    For a training loop over a data set small enough to hold, whose transform draws nothing at
    random (no augmentation) and whose loader has no workers (a worker's cache would end with
    it at each epoch's end): every epoch after the first reads the very tensors the first one
    decoded (``default_collate`` copies them into each batch, so nothing downstream edits the
    kept ones), and the results are those of decoding each time. An image that could not be
    read (an item that is its path) is not kept: the next epoch tries it again. The demo's
    4,000 training and 1,280 validation images of 64 px spent about 40 % of its training
    decoding them again.
    """

    def __init__(self, items: Dataset, budget: int = 1 << 30) -> None:
        self.items, self.budget = items, budget
        self.cache: dict[int, object] = {}
        self.keep: bool | None = None  # decided by the first item read

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> object:
        if i in self.cache:
            return self.cache[i]
        item = self.items[i]
        if not isinstance(item, tuple):  # unreadable now: try again next time
            return item
        if self.keep is None:
            size = sum(part.nbytes for part in item if isinstance(part, torch.Tensor))
            self.keep = size * len(self) <= self.budget
        if self.keep:
            self.cache[i] = item
        return item


def collate_readable(items: list) -> tuple[tuple | None, list[str]]:
    """(the default collation of the readable items, or None when a batch has none; the paths
    of the unreadable ones). The paths travel with the batch, so they reach the training
    process from DataLoader workers too."""
    from torch.utils.data import default_collate

    readable = [item for item in items if not isinstance(item, str)]
    left_out = [item for item in items if isinstance(item, str)]
    return (default_collate(readable) if readable else None), left_out


class LeftOutCounted:
    """A loader of ``collate_readable`` batches that yields the batches (None: none readable)
    and gathers the unreadable paths in ``unreadable``."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.unreadable: set[str] = set()

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple | None]:
        # Lazily, so that asking for an iterator starts no workers and draws nothing until the
        # first batch. Releases before 0.4.0 drew one base seed from torch's generator for an
        # iterator their progress bar made and never used; drawing it here keeps the
        # training's random stream (dropout, crops) and so the trained weights what they were.
        torch.empty((), dtype=torch.int64).random_()
        for batch, left_out in self.loader:
            self.unreadable.update(left_out)
            yield batch

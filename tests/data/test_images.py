"""Scanning an image folder gives stable ids and labels, and loads RGB tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.images import ImageDataset, scan_image_folder
from pipeline.errors import UserError
from pipeline.models.preprocessing import Preprocessing


def _write(path: Path, colour: tuple[int, ...], mode: str = "RGB", size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), colour).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _write(root / "dog" / "b.JPEG", (0, 0, 255))
    _write(root / "dog" / "a.png", (0, 255, 0))
    _write(root / "cat" / "z.bmp", (255, 0, 0))
    _write(root / "cat" / "m.png", (7,), mode="L")  # greyscale must come back as RGB
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    return root


def test_scan_sorts_classes_and_files(folder: Path) -> None:
    frame, classes = scan_image_folder(folder)
    assert classes == ["cat", "dog", "empty"]
    assert list(frame.columns) == ["image_id", "path", "label"]
    assert frame["path"].tolist() == ["cat/m.png", "cat/z.bmp", "dog/a.png", "dog/b.JPEG"]
    assert frame["image_id"].tolist() == [0, 1, 2, 3]
    assert frame["label"].tolist() == [0, 0, 1, 1]
    assert frame["image_id"].dtype == np.int64 and frame["label"].dtype == np.int64


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="nowhere") as info:
        scan_image_folder(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_root_without_images_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "cls").mkdir()
    with pytest.raises(UserError, match="no images"):
        scan_image_folder(tmp_path)


def test_dataset_returns_normalised_tensor_label_and_index(folder: Path) -> None:
    frame, _ = scan_image_folder(folder)
    dataset = ImageDataset(folder, frame["path"], frame["label"],
                           Preprocessing(8, 8, (0.5,) * 3, (0.5,) * 3).transform())
    assert len(dataset) == 4
    image, label, index = dataset[2]  # dog/a.png, pure green
    assert (label, index) == (1, 2)
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0], torch.tensor([-1.0, 1.0, -1.0]))
    grey, _, _ = dataset[0]
    assert grey.shape == (3, 8, 8)


def test_transform_resizes_and_crops(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (20, 10), (255, 255, 255)).save(path)
    with Image.open(path) as img:
        out = Preprocessing(6, 6, (0.0,) * 3, (1.0,) * 3).transform()(img)
    assert out.shape == (3, 6, 6)
    assert torch.allclose(out, torch.ones_like(out))

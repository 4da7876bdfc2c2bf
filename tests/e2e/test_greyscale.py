"""A model whose first convolution reads one channel runs end to end on a folder of greyscale
PNGs: every store keeps one ``grey`` channel, and the atlas draws its projections, patches,
thumbnails and first-layer filters in grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import pin_device, run_cli

pytestmark = pytest.mark.slow  # runs the pipeline in a subprocess

SIDE = 40
MODEL = '''from torch import nn


def build(num_classes):
    return nn.Sequential(nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, num_classes))
'''
WORKFLOW = """
[data]
source = "imagefolder"
root = "data"
train_root = "data"
[model]
factory = "tiny_grey.py:build"
image_size = 40
[train]
enabled = true
epochs = 1
batch_size = 8
snapshot_epochs = [1]
[activations]
batch_size = 8
chunk_size = 8
[rank]
top_k = 4
[deconv]
batch_size = 16
[occlusion]
images = 3
stride = 4
[invariance]
images = 2
[featurevis]
steps = 16
"""


def _grey_images(root: Path, per_class: int = 8) -> None:
    """Three classes of 8-bit greyscale PNGs: stripes, dots and rings, a little noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    for name in ("bars", "dots", "rings"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            if name == "bars":
                picture = ((yy + i) // 4 % 2) * 200
            elif name == "dots":
                picture = (((yy + i) % 8 < 3) & ((xx + 2 * i) % 8 < 3)) * 220
            else:
                picture = (np.hypot(yy - SIDE / 2 - i % 3, xx - SIDE / 2) // 4 % 2) * 210
            noisy = picture + rng.integers(0, 30, (SIDE, SIDE))
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8), "L").save(root / name / f"{i}.png")


def _is_grey(path: Path) -> bool:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return bool((pixels == pixels[..., :1]).all())


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("grey")
    _grey_images(base / "data")
    (base / "tiny_grey.py").write_text(MODEL, encoding="utf-8")
    (base / "grey.toml").write_text(pin_device(WORKFLOW), encoding="utf-8")
    result = run_cli("run", "all", "-w", "grey.toml", cwd=base, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return base


def test_every_store_keeps_one_grey_channel(grey_run):
    import xarray as xr
    import zarr

    run = grey_run / "runs" / "grey"
    projections = zarr.open_group(run / "projections.zarr", mode="r")
    labels = [name for name, _ in projections.groups()]
    assert labels
    for label in labels:
        group = projections[label]
        for name in ("projections", "patches", "thumbs"):
            assert group[name].shape[-1] == 1, (label, name)
        assert list(group["channel"][:]) == ["grey"]
    layer = xr.open_zarr(run / "projections.zarr", group=labels[-1], consolidated=False)
    assert layer.sizes["channel"] == 1 and list(layer["channel"].values) == ["grey"]
    occlusion = zarr.open_group(run / "occlusion.zarr", mode="r")
    assert occlusion["images"].shape[-1] == occlusion["projection"].shape[-1] == 1
    evolution = zarr.open_group(run / "evolution.zarr", mode="r")
    assert all(evolution[label]["patches"].shape[-1] == 1 for label in evolution.attrs["layers"])


def test_the_atlas_draws_the_grey_run_in_grey(grey_run):
    atlas = grey_run / "reports" / "grey"
    tiles = sorted((atlas / "tiles").rglob("*.jpg")) + sorted((atlas / "tiles").rglob("*.webp"))
    assert len(tiles) >= 8
    # every tile: the projections (or layer 1's filter) and the patches, R == G == B throughout
    assert [tile for tile in tiles if not _is_grey(tile)] == []
    assert all(_is_grey(sheet) for sheet in (atlas / "thumbs").rglob("*.jpg"))
    for picture in ("input.*", "projection-*.webp"):
        found = list((atlas / "occlusion").rglob(picture))
        assert found and all(_is_grey(path) for path in found), picture
    assert all(_is_grey(path) for path in (atlas / "evolution").rglob("0*.*"))
    with Image.open(tiles[-1]) as tile:  # a projection grid (lossless), not all one grey
        assert len(np.unique(np.asarray(tile))) > 8
    index = (atlas / "index.html").read_text(encoding="utf-8")
    assert "grey (1 channel)" in index


def test_the_first_layer_filters_are_grey_filters(grey_run):
    atlas = grey_run / "reports" / "grey"
    grid = atlas / "filters.png"
    assert grid.is_file() and _is_grey(grid)
    with Image.open(grid) as image:
        values = np.unique(np.asarray(image)[..., 0])
    assert values.min() == 0 or values.max() == 255  # each filter at full contrast
    assert "All 8 filters" in (atlas / "layers" / "conv1.html").read_text(encoding="utf-8")

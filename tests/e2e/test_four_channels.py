"""A model of four input channels, in process: RGBA images are read as four channels, the
projections store keeps them (``r g b a``), and the atlas draws channels 1-3 in colour with the
fourth in grey beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.atlas.channels import FOURTH_GAP, GAP_COLOUR, shown_width
from pipeline.atlas.gather import shown_cells, shown_projections
from pipeline.atlas.tiles import compose_unit_tile
from pipeline.data.images import ImageDataset
from pipeline.interp import field_tile, receptive_fields
from pipeline.interp.deconv_run import write_projections
from pipeline.interp.maps import feature_maps
from pipeline.interp.projection_meta import ProjectionPlan
from pipeline.interp.projection_store import LayerPlan
from pipeline.labelled import ImageCoords
from pipeline.models.preprocessing import Preprocessing

pytestmark = pytest.mark.slow  # builds and projects through a model: a few seconds

SIDE, TOP_K = 24, 2


def _rgba_images(root) -> list[str]:
    """Two classes of RGBA PNGs whose alpha is a ramp unlike any colour channel."""
    rng = np.random.default_rng(5)
    paths = []
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            colour = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
            alpha = np.tile(np.linspace(0, 255, SIDE).astype(np.uint8), (SIDE, 1)).T
            Image.fromarray(np.dstack([colour, np.roll(alpha, 4 * i, axis=0)]), "RGBA").save(
                root / name / f"{i}.png")
            paths.append(f"{name}/{i}.png")
    return paths


def _top_k(model: nn.Module, module: str, batch: torch.Tensor) -> pd.DataFrame:
    """Each unit's TOP_K images by their maximum, and where it is, as the rank stage gives them."""
    maps = feature_maps(model, batch, module)  # [n, units, h, w]
    n, units, _, width = maps.shape
    peaks, where = maps.flatten(2).max(dim=2)
    rows = []
    for unit in range(units):
        order = torch.argsort(-peaks[:, unit], stable=True)[:TOP_K]
        for rank, image in enumerate(order.tolist()):
            y, x = divmod(int(where[image, unit]), width)
            rows.append(("conv2", unit, rank, image, float(peaks[image, unit]), y, x))
    return pd.DataFrame(rows, columns=["layer", "unit", "rank", "image_id", "value", "y", "x"])


def test_four_channels_from_the_images_to_the_atlas_cells(tmp_path):
    import zarr

    paths = _rgba_images(tmp_path / "data")
    labels = [0, 0, 0, 1, 1, 1]
    prep = Preprocessing(SIDE, SIDE, (0.5,) * 4, (0.25,) * 4)
    pixels = ImageDataset(tmp_path / "data", paths, labels, prep.pixels())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(5, 2)).eval()
    crops = torch.stack([pixels[i][0] for i in range(len(paths))])
    assert crops.shape == (6, 4, SIDE, SIDE)
    field = receptive_fields(model, (SIDE, SIDE))["4"]
    topk = _top_k(model, "4", prep.normalise()(crops))
    store = tmp_path / "projections.zarr"
    write_projections(store, model, [LayerPlan("conv2", "4", 5, (12, 12), field)],
                      ProjectionPlan(("deconvnet",), TOP_K, SIDE, ("conv2",)), topk, pixels,
                      ImageCoords(np.arange(6), np.asarray(paths), np.asarray(labels, np.int32),
                                  np.asarray(["a", "a", "a", "b", "b", "b"])),
                      prep.normalise(), batch_size=4, num_workers=0, device="cpu", channels=4)

    group = zarr.open_group(store, mode="r")["conv2"]
    assert list(group["channel"][:]) == ["r", "g", "b", "a"]
    patches, projections = group["patches"][:], group["projections"][:]
    assert patches.shape[-1] == projections.shape[-1] == group["thumbs"].shape[-1] == 4
    tile = tuple(group.attrs["tile"])
    row = topk.iloc[3]
    image = np.asarray(Image.open(tmp_path / "data" / paths[int(row.image_id)]))
    expected = field_tile(image, field.box(int(row.y), int(row.x)), tile, 128)
    assert np.array_equal(patches[row.unit, row["rank"]], expected)  # alpha kept, not composited

    # the atlas's cells: channels 1-3, then the fourth in grey, FOURTH_GAP px to the right
    cells = shown_cells(patches[row.unit])
    height, width = tile
    assert cells.shape == (TOP_K, height, shown_width(width, 4), 3)
    assert np.array_equal(cells[..., :width, :], patches[row.unit, ..., :3])
    assert (cells[..., width:width + FOURTH_GAP, :] == GAP_COLOUR).all()
    assert all(np.array_equal(cells[..., width + FOURTH_GAP:, c], patches[row.unit, ..., 3])
               for c in range(3))
    drawn = shown_projections(projections[0, row.unit])
    assert drawn.shape == cells.shape
    fourth = drawn[..., width + FOURTH_GAP:, :]
    assert (fourth[..., 0] == fourth[..., 1]).all() and (fourth[..., 1] == fourth[..., 2]).all()
    assert np.asarray(compose_unit_tile(drawn, cells, scale=2)).shape[1] > 4 * width * 2

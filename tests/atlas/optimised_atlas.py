"""A small atlas with optimised inputs, for tests that build their own: a featurevis store
(:mod:`pipeline.featurevis.store`) of one layer, and an atlas context of two layers whose first
is in the store (some of its units) and whose second is not.

conv2's units: 0 driven by both objectives, well past its range on the data; 1 not driven by
the ``mean`` objective (its picture must not be drawn), driven at the centre to below its range
on the data; 2 dead on the data, driven all the same; 3 not optimised (the store holds a subset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.atlas.context import AtlasContext, LayerEntry, TopImage, UnitEntry
from pipeline.featurevis.meta import FeatureVisMeta, FeatureVisPlan
from pipeline.featurevis.store import VisLayer, create_store, finish_store, write_block
from tests.atlas.pictures import unit_pictures

INPUT = 16  # px: the network's input
SIDE = 10  # px: conv2's receptive field, the centre objective's input
BINNING = 2  # conv2's projections and patches are binned by 2: so is its centre picture
STEPS, LR = 8, 0.05
UNITS = (0, 1, 2)  # optimised; unit 3 is not
DATA_PEAK = np.array([2.0, 4.0, 0.0], np.float32)
PEAK = np.array([[5.0, 0.0, 1.5],  # mean: 2.5x, not driven, dead on the data
                 [3.0, 1.0, 0.7]], np.float32)  # centre: 1.5x, 0.25x
DRIVEN = np.array([[True, False, True], [True, True, True]])


def write_store(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the featurevis store; return its arrays (what the atlas must draw)."""
    rng = np.random.default_rng(seed)
    block = {
        "images": rng.integers(0, 256, (3, INPUT, INPUT, 3), dtype=np.uint8),
        "centre": rng.integers(0, 256, (3, SIDE, SIDE, 3), dtype=np.uint8),
        "value": PEAK * 0.5, "peak": PEAK, "start": np.full((2, 3), 0.01, np.float32),
        "driven": DRIVEN,
    }
    layer = VisLayer("conv2", "features.relu2", UNITS, SIDE, (2, 2), (SIDE, SIDE))
    meta = FeatureVisMeta(STEPS, LR, 0, INPUT, ("mean", "centre"), "cpu")
    plan = FeatureVisPlan(STEPS, LR, 0, INPUT, 3, ("conv2",), (len(UNITS),))
    create_store(path, [layer], plan, meta, {"conv2": DATA_PEAK})
    write_block(path, "conv2", 0, block)
    finish_store(path)
    return block


def atlas_context(out: Path) -> AtlasContext:
    """Two layers' entries with their tiles written under ``out`` (none optimised yet); conv2's
    live units with nine top images each (no thumbnails)."""

    def live(unit: int, peak: float) -> UnitEntry:
        pictures = unit_pictures(out, f"tiles/conv2/{unit:04d}", 9, SIDE // BINNING, seed=unit)
        top = tuple(TopImage(rank, peak - rank / 10, f"ring/{rank}.png", "ring", "ring",
                             pictures["grid"][rank], pictures["patches"][rank], None, None,
                             (pictures["grid"][rank],)) for rank in range(9))
        return UnitEntry(unit, False, peak, "ring", 9, top_class_share=0.9, named_class="ring",
                         frac_active=0.5, top_images=top, **pictures)

    conv2 = LayerEntry(
        label="conv2", module="features.relu2", out_shape=(4, 4, 4), receptive_field=SIDE,
        units=(live(0, 2.0), live(1, 4.0), UnitEntry(2, True, 0.0, None, 0, None),
               live(3, 3.0)),
        preview=None, binning=BINNING, tile_factor=4, page_factor=8)
    conv3 = LayerEntry(
        label="conv3", module="features.relu3", out_shape=(1, 2, 2), receptive_field=14,
        units=(UnitEntry(0, False, 1.0, "disc", 9, top_class_share=0.9, named_class="disc",
                         frac_active=0.5,
                         **unit_pictures(out, "tiles/conv3/0000", 9, 7, seed=9)),),
        preview=None, tile_factor=4, page_factor=8)
    return AtlasContext(
        title="Optimised", workflow="tiny", model_name="Net", dataset_name="shapes",
        n_images=10, n_classes=2, top1=0.5, top5=1.0, val_accuracy=None,
        layers=(conv2, conv3), filters_image=None, generated="2024-06-01", version="0.1.0",
        method="deconvnet", top_k=9, input_size=INPUT)


def optimised_atlas(folder: Path) -> tuple[Path, AtlasContext, dict[str, np.ndarray]]:
    """The store and the atlas with its optimised inputs written under ``folder``: the atlas
    folder, its context and the store's arrays."""
    import dataclasses

    from pipeline.atlas.featurevis_pictures import with_optimised
    from pipeline.atlas.parallel import Workers
    from pipeline.atlas.render import write_atlas

    arrays = write_store(folder / "featurevis.zarr")
    out = folder / "atlas"
    context = atlas_context(out)
    layers, recipe = with_optimised(context.layers, folder / "featurevis.zarr", out, Workers(1))
    context = dataclasses.replace(context, layers=tuple(layers), optimisation=recipe)
    write_atlas(context, out)
    return out, context, arrays

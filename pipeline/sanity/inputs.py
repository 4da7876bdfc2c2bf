"""Input dependence: does a unit's picture follow its image, or is it the same in every image?

Per sampled unit and method, from the projections and patches the deconv stage stored (trained
network; ``projections.zarr``, see :mod:`pipeline.interp.projection_store`), over its top
``images`` ranks:

- ``between_projections``: the mean Spearman correlation of the unit's projections' magnitude
  maps with each other, pair by pair, over the pixels inside the image in both. Near 1: the
  unit shows the same picture whatever the image (a first-layer unit shows its filter).
- ``with_patches``: the mean Spearman correlation of each projection's magnitude map with its
  own image patch's local contrast (:func:`pipeline.sanity.similarity.local_contrast`, the
  Sobel edges of the patch in grey), over the pixels inside the image. High: the picture
  follows the edges of the image it came from, as an edge detector's would.

A projection is compared as :mod:`pipeline.sanity.similarity` says (its magnitude map); the
stored float16 values are divided by a positive scale, which no rank correlation sees. Empty
projections, and pairs whose correlation is undefined, are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import zarr

from pipeline.labelled import array_in
from pipeline.sanity.similarity import local_contrast, magnitude, spearman, valid_region
from pipeline.schemas import InputDependence

#: The columns of ``input_dependence.parquet``, one row per layer and method (its schema's).
INPUT_COLUMNS = tuple(InputDependence.names())

Region = tuple[slice, slice]


def unit_dependence(projections: np.ndarray, patches: np.ndarray, regions: Sequence[Region]
                    ) -> tuple[float, float]:
    """(between projections, with patches) of one unit and method: ``projections``
    ``[rank, h, w, C]``, ``patches`` ``[rank, h, w, C]`` and each rank's region inside the
    image (module doc); NaN where nothing could be compared."""
    maps = [magnitude(p) for p in projections]
    shown = [i for i, m in enumerate(maps) if m[regions[i]].size and m[regions[i]].max() > 0]
    between = []
    for i, j in combinations(shown, 2):
        both = _overlap(regions[i], regions[j])
        between.append(spearman(maps[i][both], maps[j][both]))
    with_patch = [spearman(maps[i][regions[i]],
                           local_contrast(np.asarray(patches[i])[regions[i]])) for i in shown]
    return _nanmean(between), _nanmean(with_patch)


def _overlap(a: Region, b: Region) -> Region:
    return tuple(slice(max(x.start, y.start), max(max(x.start, y.start), min(x.stop, y.stop)))
                 for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def layer_dependence(group: zarr.Group, methods: Sequence[str], units: Sequence[int],
                     images: int, image_size: int) -> list[dict]:
    """One row per method (:data:`INPUT_COLUMNS` less the layer) for ``units`` of a layer
    group of ``projections.zarr``, over their top ``images`` ranks."""
    stored = [str(m) for m in np.asarray(array_in(group, "method")[:])]
    tile_y, tile_x = array_in(group, "patches").shape[2:4]
    units = sorted(int(u) for u in units)
    # (zarr turns the lists of an orthogonal selection into arrays itself)
    unit_ids, ranks = np.asarray(units), slice(0, images)
    # one read per array (zarr fetches its chunks together), not one per unit
    ids = np.asarray(array_in(group, "image_id").get_orthogonal_selection((unit_ids, ranks)))
    boxes = np.asarray(array_in(group, "boxes").get_orthogonal_selection((unit_ids, ranks)))
    patches = np.asarray(array_in(group, "patches").get_orthogonal_selection((unit_ids, ranks)))
    chosen = np.asarray([stored.index(method) for method in methods])
    projections = np.asarray(array_in(group, "projections").get_orthogonal_selection(
        (chosen, unit_ids, ranks)), dtype=np.float32)
    figures: dict[str, list[tuple[float, float]]] = {method: [] for method in methods}
    for i in range(len(units)):
        shown = int((ids[i] >= 0).sum())  # the ranks a unit has come first
        if shown == 0:
            continue
        regions = [valid_region(_box(box), (image_size, image_size), (tile_y, tile_x))
                   for box in boxes[i, :shown]]
        for m, method in enumerate(methods):
            figures[method].append(unit_dependence(projections[m, i, :shown],
                                                   patches[i, :shown], regions))
    rows = []
    for method, values in figures.items():
        pairs = np.array(values, dtype=np.float64).reshape(-1, 2)
        rows.append({"method": method,
                     "between_projections": _mean(pairs[:, 0]),
                     "between_projections_std": _std(pairs[:, 0]),
                     "with_patches": _mean(pairs[:, 1]), "with_patches_std": _std(pairs[:, 1]),
                     "n": int((~np.isnan(pairs).any(axis=1)).sum())})
    return rows


def _box(values: np.ndarray) -> tuple[int, int, int, int]:
    top, left, bottom, right = (int(v) for v in values)
    return top, left, bottom, right


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def _std(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.std()) if kept.size else float("nan")

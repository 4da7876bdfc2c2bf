"""Figure 7 over the sampled images, kept in ``occlusion.zarr`` for the atlas.

``occlusion.zarr`` holds everything the atlas's occlusion pages draw, so rendering needs neither
the model nor the images. Root attributes: ``layer`` (label) and ``module`` of the tracked
layer, ``size`` and ``stride`` of the square, ``image_size`` [H, W], ``grid`` [rows, columns]
(see :mod:`pipeline.experiments.occlusion` for the geometry) and ``device``. Arrays, with
their zarr ``dimension_names``, first the occluded image:

- ``images`` uint8 ``[image, y, x, channel]``, the network's input as pixels (preprocessed,
  before normalisation), in its own channels (grey; r, g, b; or r, g, b, a);
- ``tracked_unit`` int32 ``[image]`` (the tracked channel; ``unit`` is a dimension
  elsewhere), ``position`` int32 ``[image, yx]`` (y, x of its peak in the layer's map),
  ``box`` int32 ``[image, side]`` (that activation's receptive field in input pixels: top,
  left, bottom, right, clipped to the image);
- ``clean`` float32 ``[image, measure]``, unoccluded: the peak activation, the tracked map's
  total, P(true class), the most probable class, its probability (``CLEAN_COLUMNS``);
- ``total``, ``prob_true``, ``predicted_prob`` float32 and ``predicted`` int32
  ``[image, row, column]``: figure panels (b), (d), (e) with the square at each cell;
- ``projection`` float16 ``[image, y, x, channel]``, panel (c): the deconvnet projection of the
  tracked peak on the whole image divided by its own largest absolute value (as the deconv
  stage stores projections), and ``projection_scale`` float32 ``[image]``, that value.

and the coordinates (:mod:`pipeline.labelled`): ``image`` (the ids, in the arrays' order),
``path``, ``label`` and ``class_name`` per image, ``yx``, ``side``, ``measure`` and ``channel``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import UserError
from pipeline.experiments.occlusion import OccluderGrid, occluder_grid
from pipeline.labelled import (
    BOX_SIDES,
    IMAGE_COORDS,
    ImageCoords,
    channel_names,
    labelled_array,
    write_coordinate,
    write_image_coordinates,
)
from pipeline.metadata import Metadata

if TYPE_CHECKING:
    from torch import nn

    from pipeline.data.images import IndexedImages

CLEAN_COLUMNS = ("peak", "total", "prob_true", "predicted", "predicted_prob")
# each data array's dimension names (the image's id and label are coordinates)
_DIMS = {"images": ("image", "y", "x", "channel"), "tracked_unit": ("image",),
         "position": ("image", "yx"), "box": ("image", "side"), "clean": ("image", "measure"),
         "total": ("image", "row", "column"), "prob_true": ("image", "row", "column"),
         "predicted": ("image", "row", "column"), "predicted_prob": ("image", "row", "column"),
         "projection": ("image", "y", "x", "channel"), "projection_scale": ("image",)}


def tracked_layer(labels: list[str], wanted: str, module_of) -> tuple[str, str]:
    """(label, module) of ``[occlusion] layer``: ``wanted``, or the last analysed layer."""
    if not labels:
        raise UserError("[occlusion] layer: the activations store records no layer; set "
                        "[activations] modules or leave it empty for every conv layer")
    label = wanted or labels[-1]
    if label not in labels:
        raise UserError(f"[occlusion] layer '{wanted}' is not an analysed layer; use one of "
                        f"{', '.join(labels)} (set by [activations] modules), or leave it empty "
                        "for the last")
    return label, str(module_of(label))


def square_grid(crop: int, size: int, stride: int) -> OccluderGrid:
    """The grid of ``[occlusion] size`` and ``stride`` over the model's square input, refusing
    a square larger than the input with a line that says what to set."""
    if size > crop:
        raise UserError(f"[occlusion] size ({size}) is larger than the model's "
                        f"{crop} px input; use 0 (a quarter of it) or a smaller square")
    return occluder_grid((crop, crop), size, stride)


def occlude_images(model: nn.Module, images: IndexedImages, image_ids: Sequence[int], module: str,
                   grid: OccluderGrid, batch_size: int, mean: Sequence[float],
                   std: Sequence[float], on_batch: Callable[[int], object] | None = None,
                   incremental: bool = True, say: Callable[[str], object] = print
                   ) -> dict[str, np.ndarray]:
    """The data arrays of ``occlusion.zarr`` (see the module doc) for ``image_ids`` of
    ``images`` (normalised with ``mean`` and ``std``), tracking layer ``module``, with the
    images' ``image_id`` and ``label`` (:func:`write_occlusion_store` stores those as the
    coordinates ``image`` and ``label``); ``on_batch(positions)`` after each batch of occluded
    copies. With ``incremental`` each position recomputes only what its square changes
    (:mod:`pipeline.experiments.incremental`) where the model allows it, checked on the first
    image; where it does not, ``say`` tells why, once, and every position runs the whole
    network."""
    from pipeline.experiments.occlusion import incremental_graph, occlude
    from pipeline.interp import Projector, clip_box, receptive_fields
    from pipeline.models.preprocessing import shown_pixels

    field = receptive_fields(model, grid.image_hw)[module]
    projector = Projector(model, method="deconvnet", batch_size=1)

    n, (rows, columns), channels = len(image_ids), grid.shape, len(mean)
    arrays: dict[str, np.ndarray] = {
        "image_id": np.asarray(image_ids, np.int32).reshape(n),
        "label": np.zeros(n, np.int32),
        "images": np.zeros((n, *grid.image_hw, channels), np.uint8),
        "tracked_unit": np.zeros(n, np.int32), "position": np.zeros((n, 2), np.int32),
        "box": np.zeros((n, 4), np.int32), "clean": np.zeros((n, len(CLEAN_COLUMNS)), np.float32),
        "total": np.zeros((n, rows, columns), np.float32),
        "prob_true": np.zeros((n, rows, columns), np.float32),
        "predicted": np.zeros((n, rows, columns), np.int32),
        "predicted_prob": np.zeros((n, rows, columns), np.float32),
        "projection": np.zeros((n, *grid.image_hw, channels), np.float16),
        "projection_scale": np.zeros(n, np.float32),
    }
    graph = None
    for i, image_id in enumerate(image_ids):
        image, image_label = images[image_id][:2]
        if incremental and i == 0:
            graph, why = incremental_graph(model, image, module, grid)
            if graph is None:
                say(f"[occlusion] every position runs the whole network: incremental inference "
                    f"cannot be used on this model ({why})")
            elif why:
                say(f"[occlusion] incremental inference stops before {module}: {why}; from "
                    "there every position runs in full")
        result = occlude(model, image, int(image_label), module, grid, batch_size,
                         projector, on_batch=on_batch, incremental=graph)
        arrays["images"][i] = shown_pixels(image, mean, std)
        arrays["label"][i] = int(image_label)
        arrays["tracked_unit"][i], arrays["position"][i] = result.unit, result.position
        arrays["box"][i] = clip_box(field.box(*result.position), grid.image_hw)[0]
        arrays["clean"][i] = (result.clean_peak, result.clean_total, result.clean_prob,
                              result.clean_predicted, result.clean_predicted_prob)
        for name in ("total", "prob_true", "predicted", "predicted_prob"):
            arrays[name][i] = getattr(result, name)
        projection = np.nan_to_num(result.projection, nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(np.abs(projection).max())
        if peak > 0:
            arrays["projection"][i] = projection / peak
            arrays["projection_scale"][i] = peak
    return arrays


@dataclass(frozen=True)
class OcclusionMeta(Metadata):
    """``occlusion.zarr``'s root attributes: the tracked layer (its label and module), the
    occluder's size and stride, the input's size, the positions' grid (rows, columns) and the
    device it ran on."""

    layer: str
    module: str
    size: int
    stride: int
    image_size: tuple[int, int]
    grid: tuple[int, int]
    device: str


def write_occlusion_store(path: Path, arrays: dict[str, np.ndarray], label: str, module: str,
                          grid: OccluderGrid, images: ImageCoords, device: str) -> None:
    """Write ``occlusion.zarr`` at ``path``: ``arrays`` (from :func:`occlude_images`) of the
    occluded ``images`` (their ids and labels become the coordinates), and the root attributes
    that say what they are."""
    import zarr

    from pipeline.atomic import zarr_writes_settled

    if not (np.array_equal(arrays["image_id"], images.ids)
            and np.array_equal(arrays["label"], images.labels)):
        raise ValueError("occlusion arrays and image coordinates are of different images")
    rows, columns = grid.shape
    with zarr_writes_settled():
        store = zarr.open_group(path, mode="w")
        store.attrs.update(OcclusionMeta(label, module, grid.size, grid.stride,
                                         (grid.image_hw[0], grid.image_hw[1]), (rows, columns),
                                         device).to_attrs())
        write_image_coordinates(store, images)
        for name, coordinate in (("yx", ("y", "x")), ("side", BOX_SIDES),
                                 ("measure", CLEAN_COLUMNS),
                                 ("channel", channel_names(arrays["images"].shape[-1]))):
            write_coordinate(store, name, np.asarray(coordinate, dtype=str))
        for name, dims in _DIMS.items():
            values = arrays[name]
            labelled_array(store, name, dims, values.shape, values.dtype,
                           IMAGE_COORDS)[...] = values

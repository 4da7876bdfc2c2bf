"""The deconv stage's work: decode the top images once, take their units' maps from the
activations stage (or pass them through the model), then fill ``projections.zarr``.

The store's layout, and why it is written a block of units at a time, is described in
:mod:`pipeline.interp.projection_store`. Each distinct top image is decoded once per run, in
parallel (``num_workers``), into the staged store's scratch folder
(:mod:`pipeline.data.decoded`); then one pass over them makes what depends on the image alone or
on a forward pass, its thumbnail and its units' whole maps (:mod:`pipeline.interp.image_pass`),
so that the blocks spend their time in the engine. The staged store survives a kill: a rerun
into the same folder continues after the last block written, and skips decoding and the pass
when they had finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.progress import progress_bar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipeline.data.decoded import DecodedImages
    from pipeline.data.images import ImageDataset
    from pipeline.interp.projection_meta import ProjectionPlan
    from pipeline.interp.projection_store import LayerPlan
    from pipeline.labelled import ImageCoords


def write_projections(staged: Path, model: nn.Module, layers: Sequence[LayerPlan],
                      plan: ProjectionPlan, topk: pd.DataFrame, pixels: ImageDataset,
                      images: ImageCoords,
                      normalise: Callable[[torch.Tensor], torch.Tensor],
                      batch_size: int, num_workers: int, device: str, channels: int = 3,
                      top_maps: Path | None = None) -> None:
    """Create (or continue) the store at ``staged`` and project every ``topk`` row of
    ``layers`` with each of the plan's methods, ``batch_size`` requests at a time; ``pixels``
    gives the images as the network's uint8 crops of ``channels`` channels (decoded by
    ``num_workers`` processes; -1: as many as suit the machine, see
    :func:`pipeline.data.decoded.decoding_workers`) and ``images`` who they are (the
    coordinates, and the files named when one cannot be read now). The maps the activations
    stage kept in ``top_maps`` (:mod:`pipeline.inference.top_maps`) are taken from there."""
    from pipeline.data.decoded import DecodedImages
    from pipeline.inference.top_maps import KeptMaps
    from pipeline.interp.image_pass import ImagePass
    from pipeline.interp.projection_store import (
        DECODED,
        IMAGE_PASS,
        BlockProjector,
        create_store,
        finish_store,
    )

    create_store(staged, layers, plan, device, topk, images, channels)
    _say_resumed(staged, layers, batch_size)
    ids = np.unique(topk["image_id"].to_numpy())
    bar = progress_bar("decode top images", total=len(ids), unit="img")
    decoded = DecodedImages.build(staged / DECODED, ids, pixels, plan.image_size,
                                  num_workers, bar.update, channels)
    bar.close()
    if decoded.reused:
        print(f"[deconv] reusing the {len(ids)} top images a killed run had decoded")
    _check_readable(decoded, images.paths, len(ids))
    bar = progress_bar("thumbnails and maps", total=len(ids) - len(decoded.unreadable()),
                       unit="img")
    per_image = ImagePass.build(staged / IMAGE_PASS, model, layers, topk, plan.top_k, decoded,
                                normalise, batch_size, bar.update,
                                KeptMaps(top_maps))
    bar.close()
    if per_image.kept:
        print(f"[deconv] {per_image.kept} top maps kept by the activations stage; "
              f"{per_image.passed} images passed through the model for the others")
    job = BlockProjector(model, plan.methods, decoded, per_image, normalise, plan.top_k,
                         batch_size)
    bar = progress_bar("deconv", total=len(topk) * len(plan.methods), unit="proj")
    for layer in layers:
        job.layer(staged, layer, topk[topk["layer"] == layer.label], bar.update)
    bar.close()
    finish_store(staged)


def _say_resumed(staged: Path, layers: Sequence[LayerPlan], batch_size: int) -> None:
    """Say how much a killed run had projected, and whether it batched differently."""
    from pipeline.progress import batch_sizes_written, units_written

    resumed = sum(units_written(staged, layer.label) for layer in layers)
    if not resumed:
        return
    total = sum(layer.channels for layer in layers)
    print(f"[deconv] resuming: {resumed} of {total} units already projected")
    earlier = batch_sizes_written(staged) - {batch_size}
    if earlier:
        print(f"[deconv] those were projected with batch_size {sorted(earlier)[0]}, the rest "
              f"with {batch_size}: equal up to rounding in the last bits, not bitwise")


def _check_readable(decoded: DecodedImages, image_paths: Sequence[str] | np.ndarray,
                    n_images: int) -> None:
    """Top images that cannot be read now were read by the activations stage: the data changed
    under the run. A few are shown as missing (and said here); none at all is an error."""
    unreadable = decoded.unreadable()
    if not unreadable:
        return
    image_id, reason = unreadable[0]
    where = f"{image_paths[image_id]} ({reason})"
    if len(unreadable) == n_images:
        raise UserError(f"none of the {n_images} top images can be read now, e.g. {where}; "
                        "the data folder changed since the activations stage read it: restore "
                        "it, or run `run all --force` to analyse the folder as it is now")
    print(f"[deconv] warning: {len(unreadable)} of {n_images} top images cannot be read now, "
          f"e.g. {where}; they are left blank: restore them and run `run deconv` again")

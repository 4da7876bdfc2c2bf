"""Stage ``deconv``: projects every unit's top activations to pixel space, cropped to its field.

The store's layout, and why it is written a block of units at a time, is described in
:mod:`pipeline.interp.projection_store`. Each distinct top image is decoded once per stage,
in parallel (``[deconv] num_workers``), into the staging folder (:mod:`pipeline.data.decoded`).
The staged store survives a kill: a rerun with the same key continues after the last block
written, and skips decoding when it had finished.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.atomic import zarr_writes_settled
from pipeline.progress import progress_bar
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


# revision 2: projections.zarr's root no longer copies top_k (rank's metadata holds it)
@register_stage("deconv", inputs=("prepare", "train", "activations", "rank"),
                keys=("data.source", "data.root", "model", "deconv"), revision=2,
                outputs=("projections",), loads_weights=True,
                reads_images=True,
                # the model is the trained one when the workflow trains (its inputs say which)
                reads=("train.enabled",),)
def deconv(ctx: StageContext) -> None:
    """project each top activation back to pixel space"""
    import zarr

    from pipeline.data.decoded import DecodedImages
    from pipeline.device import resolve_device
    from pipeline.interp import receptive_fields
    from pipeline.interp.projection_store import (
        DECODED,
        BlockProjector,
        ProjectionPlan,
        create_store,
        finish_store,
        layer_plans,
    )
    from pipeline.models.analysed import analysed_model, analysed_pixels
    from pipeline.models.preprocessing import preprocessing
    from pipeline.ranking import read_rank_meta

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.deconv
    device = resolve_device(spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    prep = preprocessing(workflow)
    activations = zarr.open_group(layout.activations, mode="r")
    topk = pd.read_parquet(layout.topk)
    top_k = read_rank_meta(layout.topk).top_k
    layers = layer_plans(activations, receptive_fields(model, (prep.crop, prep.crop)))

    with zarr_writes_settled():
        staged = ctx.output(layout.projections, resumable=True)
        create_store(staged, layers, ProjectionPlan(tuple(spec.methods), top_k, prep.crop,
                                                    tuple(layer.label for layer in layers)),
                     str(device))
        _say_resumed(staged, layers, spec.batch_size)
        ids = np.unique(topk["image_id"].to_numpy())
        bar = progress_bar("decode top images", total=len(ids), unit="img")
        decoded = DecodedImages.build(
            staged / DECODED, ids, analysed_pixels(workflow, layout, manifest), prep.crop,
            spec.num_workers, bar.update)
        bar.close()
        if decoded.reused:
            print(f"[deconv] reusing the {len(ids)} top images a killed run had decoded")
        _check_readable(decoded, manifest, len(ids))
        job = BlockProjector(model, spec.methods, decoded, prep.normalise(),
                             top_k, spec.batch_size)
        bar = progress_bar("deconv", total=len(topk) * len(spec.methods), unit="proj")
        for layer in layers:
            job.layer(staged, layer, topk[topk["layer"] == layer.label], bar.update)
        bar.close()
        finish_store(staged)


def _say_resumed(staged, layers, batch_size: int) -> None:
    """Say how much a killed run had projected, and whether it batched differently."""
    from pipeline.interp.projection_store import batch_sizes_written, units_written

    resumed = sum(units_written(staged, layer.label) for layer in layers)
    if not resumed:
        return
    total = sum(layer.channels for layer in layers)
    print(f"[deconv] resuming: {resumed} of {total} units already projected")
    earlier = batch_sizes_written(staged) - {batch_size}
    if earlier:
        print(f"[deconv] those were projected with batch_size {sorted(earlier)[0]}, the rest "
              f"with {batch_size}: equal up to rounding in the last bits, not bitwise")


def _check_readable(decoded, manifest: pd.DataFrame, n_images: int) -> None:
    """Top images that cannot be read now were read by the activations stage: the data changed
    under the run. A few are shown as missing (and said here); none at all is an error."""
    from pipeline.errors import UserError

    unreadable = decoded.unreadable()
    if not unreadable:
        return
    image_id, reason = unreadable[0]
    where = f"{manifest['path'].iat[image_id]} ({reason})"
    if len(unreadable) == n_images:
        raise UserError(f"none of the {n_images} top images can be read now, e.g. {where}; "
                        "the data folder changed since the activations stage read it: restore "
                        "it, or run `run all --force` to analyse the folder as it is now")
    print(f"[deconv] warning: {len(unreadable)} of {n_images} top images cannot be read now, "
          f"e.g. {where}; they are left blank: restore them and run `run deconv` again")

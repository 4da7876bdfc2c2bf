"""Stage ``invariance`` (Figure 5): feature distances under translation, scaling and rotation.

What ``invariance.parquet`` holds: :mod:`pipeline.experiments.invariance_table`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.models.analysed import analysed_images, analysed_model
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage


@register_stage("invariance", inputs=("prepare", "train", "activations"),
                keys=("data.source", "data.root", "model", "invariance"),
                outputs=("invariance",), loads_weights=True,
                reads_images=True,
                # the model is the trained one when the workflow trains (its inputs say which)
                reads=("train.enabled",),
                enabled=lambda workflow: workflow.invariance.images > 0
                or bool(workflow.invariance.files))
def invariance(ctx: StageContext) -> None:
    """measure feature and class invariance to translation, scale and rotation (Figure 5)"""
    import zarr

    from pipeline.device import resolve_device
    from pipeline.experiments.invariance import feature_layers
    from pipeline.experiments.invariance_table import Pixels, write_invariance_table
    from pipeline.experiments.sampling import experiment_images
    from pipeline.inference.store import store_layers
    from pipeline.models.preprocessing import preprocessing

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.invariance
    manifest = pd.read_parquet(layout.manifest)
    activations = zarr.open_group(layout.activations, mode="r")
    image_ids = experiment_images(manifest, np.asarray(activations["pred"][:, 0]) >= 0,
                                  spec.images, spec.files, "invariance", "transform")
    analysed = store_layers(activations)
    if not analysed:
        raise UserError("[invariance]: the activations store records no layer; set "
                        "[activations] layers or leave it empty for every conv layer")
    device = resolve_device(spec.device)
    model = analysed_model(workflow, layout, device)
    layers = feature_layers(model, analysed[0].module, analysed[-1].module, analysed[0].label,
                            analysed[-1].label)
    prep = preprocessing(workflow)
    write_invariance_table(ctx.output(layout.invariance), model,
                           analysed_images(workflow, layout, manifest), image_ids, layers,
                           spec.batch_size, Pixels(prep.crop, prep.mean, prep.std), str(device))
    print(f"[invariance] {len(image_ids)} images, layer 1 = {layers.first_label}, last hidden "
          f"layer = {layers.last_label}")

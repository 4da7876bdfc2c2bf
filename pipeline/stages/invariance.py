"""Stage ``invariance`` (Figure 5): feature distances under translation, scaling and rotation.

``invariance.parquet`` has one row per sampled image, transform and amount: ``image_id``,
``label`` (true class), ``transform`` ("translation", "scale", "rotation"), ``amount`` (px of
vertical shift, factor, or degrees), ``distance_layer1`` and ``distance_last`` (Euclidean
distance between the original's and the transformed copy's feature vectors), ``prob_true``,
``predicted`` and ``predicted_prob`` (the most probable class and its probability), and
``norm_layer1`` / ``norm_last``, the original's vector norms (see
``pipeline.experiments.invariance``). The file's metadata (key ``invariance``, JSON) names the
two layers: ``layer1`` and ``last`` (labels as the page shows them), ``last_is_input``,
``image_size``; and carries the pictures the atlas page shows, so rendering needs neither the
model nor the images: ``images`` (image id -> the network's input as a base64 PNG, at most
``PICTURE_SIDE`` px) and ``examples`` (transform -> [amount, base64 PNG] of the first image's
transformed copies at ``example_amounts``), ``example_image`` (its id).
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.models.analysed import analysed_images, analysed_model
from pipeline.stages.context import StageContext
from pipeline.stages.registry import register_stage

PICTURE_SIDE = 128  # px: the page shows the pictures small


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
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from pipeline.device import resolve_device
    from pipeline.experiments.invariance import (
        TRANSFORMS,
        example_amounts,
        feature_layers,
        measure,
        transform_image,
    )
    from pipeline.experiments.sampling import experiment_images
    from pipeline.inference.store import store_layers
    from pipeline.models.preprocessing import preprocessing
    from pipeline.progress import progress

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
    images = analysed_images(workflow, layout, manifest)

    prep = preprocessing(workflow)
    frames, pictures, examples = [], {}, {}
    for image_id in progress(image_ids, "invariance", unit="image"):
        image, label = images[image_id][:2]
        frame = measure(model, image, int(label), layers, spec.batch_size)
        frame.insert(0, "label", int(label))
        frame.insert(0, "image_id", int(image_id))
        frames.append(frame)
        pictures[str(image_id)] = _png(image, prep)
        if not examples:
            examples = {transform: [[float(amount), _png(transform_image(image, transform,
                                                                           float(amount)), prep)]
                                    for amount in example_amounts(transform, prep.crop)]
                        for transform in TRANSFORMS}
    table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
    about = {"layer1": layers.first_label, "last": layers.last_label,
             "last_is_input": layers.last_is_input, "image_size": prep.crop,
             "device": str(device), "images": pictures, "examples": examples,
             "example_image": int(image_ids[0])}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"invariance": json.dumps(about).encode()})
    pq.write_table(table, ctx.output(layout.invariance))
    print(f"[invariance] {len(image_ids)} images, layer 1 = {layers.first_label}, last hidden "
          f"layer = {layers.last_label}")


def _png(image, prep) -> str:
    """A normalised input tensor as the pixels the network saw: base64 PNG, at most
    ``PICTURE_SIDE`` px."""
    from PIL import Image

    mean = np.asarray(prep.mean, np.float32)[:, None, None]
    std = np.asarray(prep.std, np.float32)[:, None, None]
    pixels = np.clip(image.cpu().numpy() * std + mean, 0, 1)
    picture = Image.fromarray(np.rint(pixels * 255).astype(np.uint8).transpose(1, 2, 0), "RGB")
    if max(picture.size) > PICTURE_SIDE:
        picture.thumbnail((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.BOX)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")

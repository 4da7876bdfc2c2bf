"""Stage ``deconv``: projects every unit's top activations to pixel space, cropped to its field."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.progress import progress_bar
from pipeline.stages.context import StageContext
from pipeline.stages.inputs import analysed_images, analysed_model
from pipeline.stages.registry import register_stage

PAD_GREY = 128  # patches are padded with the same grey that marks zero in a projection
THUMB = 64  # side of the whole-image thumbnails the atlas draws receptive-field boxes on


@register_stage("deconv", inputs=("prepare", "train", "activations", "rank"),
                sections=("deconv",))
def deconv(ctx: StageContext) -> None:
    """project each top activation back to pixel space"""
    import torch
    import zarr

    from pipeline.device import resolve_device
    from pipeline.interp import Projector, crop_tile, receptive_fields, to_display
    from pipeline.models.preprocessing import preprocessing

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.deconv
    device = resolve_device(spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    prep = preprocessing(workflow)
    size = prep.crop
    fields = receptive_fields(model, (size, size))
    activations = zarr.open_group(layout.activations, mode="r")
    topk = pd.read_parquet(layout.topk)
    dataset = analysed_images(workflow, layout, manifest)
    mean = torch.tensor(prep.mean).view(3, 1, 1)
    std = torch.tensor(prep.std).view(3, 1, 1)
    projector = Projector(model, method=spec.method, batch_size=spec.batch_size)

    out = zarr.open_group(ctx.output(layout.projections), mode="w")
    out.attrs.update({"method": spec.method, "top_k": workflow.rank.top_k,
                      "image_size": size, "device": str(device)})
    total = len(topk)
    bar = progress_bar("deconv", total=total, unit="proj")
    for label in activations.attrs["layers"]:
        meta = dict(activations[label].attrs)
        field = fields[meta["module"]]
        tile = field.tile_hw((size, size))
        channels, k = int(meta["channels"]), workflow.rank.top_k
        group = out.create_group(label)
        group.attrs.update({"module": meta["module"], "tile": list(tile),
                            "receptive_field": list(field.size)})
        projections = np.full((channels, k, *tile, 3), PAD_GREY, dtype=np.uint8)
        patches = np.full((channels, k, *tile, 3), PAD_GREY, dtype=np.uint8)
        boxes = np.full((channels, k, 4), -1, dtype=np.int32)
        thumbs = np.full((channels, k, THUMB, THUMB, 3), PAD_GREY, dtype=np.uint8)
        rows = topk[topk["layer"] == label].sort_values(["image_id", "unit"], ignore_index=True)
        for start in range(0, len(rows), spec.batch_size):
            batch = rows.iloc[start:start + spec.batch_size]
            images = torch.stack([dataset[int(i)][0] for i in batch["image_id"]])
            units = torch.tensor(batch["unit"].to_numpy(), dtype=torch.long)
            positions = torch.tensor(batch[["y", "x"]].to_numpy(), dtype=torch.long)
            projected = projector.project(images, meta["module"], units, positions).cpu()
            shown = (images * std + mean).clamp(0, 1)
            small = torch.nn.functional.interpolate(shown, size=(THUMB, THUMB), mode="bilinear",
                                                    antialias=True, align_corners=False)
            small = (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for j, row in enumerate(batch.itertuples(index=False)):
                box = field.box(int(row.y), int(row.x))
                proj_hwc = projected[j].permute(1, 2, 0).numpy()
                image_hwc = (shown[j].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                projections[row.unit, row.rank] = to_display(crop_tile(proj_hwc, box, tile, 0.0))
                patches[row.unit, row.rank] = crop_tile(image_hwc, box, tile, PAD_GREY)
                boxes[row.unit, row.rank] = box
                thumbs[row.unit, row.rank] = small[j]
            bar.update(len(batch))
        for name, values in (("projections", projections), ("patches", patches),
                             ("boxes", boxes), ("thumbs", thumbs)):
            array = group.create_array(name, shape=values.shape, dtype=values.dtype,
                                       chunks=(1, *values.shape[1:]))
            array[:] = values
    bar.close()

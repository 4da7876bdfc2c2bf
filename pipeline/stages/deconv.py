"""Stage ``deconv``: projects every unit's top activations to pixel space, cropped to its field.

``projections.zarr`` keeps the engine's exact output, not display images, so the atlas's
contrast and encoding can change without projecting again. Per layer group:

- ``projections`` float16 ``[method, unit, rank, h, w, 3]``: each projection divided by its own
  largest absolute value (so float16 neither underflows nor overflows, whatever the network's
  scale), and ``projection_scale`` float32 ``[method, unit, rank]``, that value: the projection
  is ``projections * projection_scale``; zero outside the image;
- ``patches`` uint8 ``[unit, rank, h, w, 3]``, the same box of the preprocessed image;
- ``boxes`` int32 ``[unit, rank, 4]`` (top, left, bottom, right; -1: no image);
- ``thumbs`` uint8 ``[unit, rank, 64, 64, 3]``, the whole network input, small;
- ``maps`` float32 ``[unit, rank, H, W]``, the unit's whole activation map in that image, and
  the attribute ``map_extent``, the input area the map covers (see ``pipeline.interp.maps``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.atomic import zarr_writes_settled
from pipeline.progress import progress_bar
from pipeline.stages.context import StageContext
from pipeline.stages.inputs import analysed_images, analysed_model
from pipeline.stages.registry import register_stage

PAD_GREY = 128  # patches are padded with the grey that marks zero in a shown projection
THUMB = 64  # side of the whole-image thumbnails the atlas draws receptive-field boxes on


@register_stage("deconv", inputs=("prepare", "train", "activations", "rank"),
                keys=("data.source", "data.root", "model", "deconv"),
                outputs=lambda workflow, layout: (layout.projections,), loads_weights=True,
                reads_images=True)
def deconv(ctx: StageContext) -> None:
    """project each top activation back to pixel space"""
    import zarr

    from pipeline.device import resolve_device
    from pipeline.interp import Projector, receptive_fields
    from pipeline.models.preprocessing import preprocessing

    workflow, layout, spec = ctx.workflow, ctx.layout, ctx.workflow.deconv
    device = resolve_device(spec.device)
    manifest = pd.read_parquet(layout.manifest)
    model = analysed_model(workflow, layout, device)
    prep = preprocessing(workflow)
    activations = zarr.open_group(layout.activations, mode="r")
    topk = pd.read_parquet(layout.topk)
    projectors = [Projector(model, method=method, batch_size=spec.batch_size)
                  for method in spec.methods]
    job = _Job(model, projectors, analysed_images(workflow, layout, manifest), prep,
               receptive_fields(model, (prep.crop, prep.crop)), workflow.rank.top_k)

    bar = progress_bar("deconv", total=len(topk) * len(projectors), unit="proj")
    with zarr_writes_settled():
        out = zarr.open_group(ctx.output(layout.projections), mode="w")
        out.attrs.update({"methods": list(spec.methods), "top_k": workflow.rank.top_k,
                          "image_size": prep.crop, "device": str(device)})
        for label in activations.attrs["layers"]:
            rows = topk[topk["layer"] == label].sort_values(["image_id", "unit"],
                                                            ignore_index=True)
            arrays, attrs = job.layer(dict(activations[label].attrs), rows, spec.batch_size, bar)
            group = out.create_group(label)
            group.attrs.update(attrs)
            for name, values in arrays.items():
                array = group.create_array(name, shape=values.shape, dtype=values.dtype,
                                           chunks=_unit_chunks(name, values.shape))
                array[:] = values
    bar.close()


def _unit_chunks(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """One chunk per unit (and method) of the pictures: the atlas reads a unit at a time. The
    small arrays (boxes, scales) are one chunk each: thousands of 100-byte files help nobody."""
    if name in ("boxes", "projection_scale"):
        return shape
    if name == "projections":
        return (1, 1, *shape[2:])
    return (1, *shape[1:])


class _Job:
    """The deconv stage's work on one layer at a time: decode, project, crop."""

    def __init__(self, model, projectors, dataset, prep, fields, top_k: int) -> None:
        import torch

        self.model, self.projectors, self.dataset = model, projectors, dataset
        self.fields, self.top_k, self.size = fields, top_k, prep.crop
        self.mean = torch.tensor(prep.mean).view(3, 1, 1)
        self.std = torch.tensor(prep.std).view(3, 1, 1)

    def layer(self, meta: dict, rows: pd.DataFrame, batch_size: int, bar
              ) -> tuple[dict[str, np.ndarray], dict]:
        """Every array and attribute of one layer's group (see the module doc)."""
        from pipeline.interp.maps import map_extent

        module, size, k = meta["module"], self.size, self.top_k
        field = self.fields[module]
        tile = field.tile_hw((size, size))
        channels, map_hw = int(meta["channels"]), (int(meta["height"]), int(meta["width"]))
        n_methods = len(self.projectors)
        arrays = {
            "projections": np.zeros((n_methods, channels, k, *tile, 3), np.float16),
            "projection_scale": np.zeros((n_methods, channels, k), np.float32),
            "patches": np.full((channels, k, *tile, 3), PAD_GREY, np.uint8),
            "boxes": np.full((channels, k, 4), -1, np.int32),
            "thumbs": np.full((channels, k, THUMB, THUMB, 3), PAD_GREY, np.uint8),
            "maps": np.zeros((channels, k, *map_hw), np.float32),
        }
        for start in range(0, len(rows), batch_size):
            batch = rows.iloc[start:start + batch_size]
            self._batch(batch, module, field, tile, arrays)
            bar.update(len(batch) * n_methods)
        attrs = {"module": module, "tile": list(tile), "receptive_field": list(field.size),
                 "methods": [p.method for p in self.projectors],
                 "map_extent": list(map_extent(field, map_hw))}
        return arrays, attrs

    def _batch(self, batch: pd.DataFrame, module: str, field, tile, arrays: dict) -> None:
        import torch
        import torch.nn.functional as F

        from pipeline.interp import crop_tile
        from pipeline.interp.maps import feature_maps

        # Rows are sorted by image: decode each distinct image once.
        ids = batch["image_id"].to_numpy()
        distinct, inverse = np.unique(ids, return_inverse=True)
        decoded = torch.stack([self.dataset[int(i)][0] for i in distinct])
        images = decoded[torch.from_numpy(inverse)]
        units = torch.tensor(batch["unit"].to_numpy(), dtype=torch.long)
        positions = torch.tensor(batch[["y", "x"]].to_numpy(), dtype=torch.long)
        device = next(self.model.parameters()).device
        fmaps = feature_maps(self.model, decoded.to(device), module)
        maps = fmaps[torch.from_numpy(inverse).to(device), units.to(device)].float().cpu()
        projected = [p.project(images, module, units, positions).cpu().numpy()
                     for p in self.projectors]
        shown = (decoded * self.std + self.mean).clamp(0, 1)
        small = F.interpolate(shown, size=(THUMB, THUMB), mode="bilinear", antialias=True,
                              align_corners=False)
        small = (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pixels = (shown * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for j, row in enumerate(batch.itertuples(index=False)):
            unit, rank, image = int(row.unit), int(row.rank), int(inverse[j])
            box = field.box(int(row.y), int(row.x))
            for m, values in enumerate(projected):
                crop = np.nan_to_num(crop_tile(values[j].transpose(1, 2, 0), box, tile, 0.0),
                                     nan=0.0, posinf=0.0, neginf=0.0)
                peak = float(np.abs(crop).max())
                if peak > 0:
                    arrays["projections"][m, unit, rank] = crop / peak
                    arrays["projection_scale"][m, unit, rank] = peak
            arrays["patches"][unit, rank] = crop_tile(pixels[image], box, tile, PAD_GREY)
            arrays["boxes"][unit, rank] = box
            arrays["thumbs"][unit, rank] = small[image]
            arrays["maps"][unit, rank] = maps[j].numpy()

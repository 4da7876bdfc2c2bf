"""Figure 5 over the sampled images, kept in ``invariance.parquet`` for the atlas.

``invariance.parquet`` has one row per sampled image, transform and amount (an image is
measured only under the transforms whose sample it is in, see
:mod:`pipeline.experiments.invariance_sampling`): ``image_id``,
``label`` (true class), ``transform`` ("translation", "scale", "rotation"), ``amount`` (px of
vertical shift, factor, or degrees), ``distance_layer1`` and ``distance_last`` (Euclidean
distance between the original's and the transformed copy's feature vectors), ``prob_true``,
``predicted`` and ``predicted_prob`` (the most probable class and its probability), and
``norm_layer1`` / ``norm_last``, the original's vector norms (see
:mod:`pipeline.experiments.invariance`). The file's metadata (key ``invariance``, JSON) names
the two layers: ``layer1`` and ``last`` (labels as the page shows them), ``last_is_input``,
``image_size``; and carries the pictures the atlas page shows, so rendering needs neither the
model nor the images: ``images`` (image id -> the network's input as a base64 PNG, at most
``PICTURE_SIDE`` px, in its own channels: grey, RGB or RGBA) and ``examples`` (transform ->
[amount, base64 PNG] of the first image's transformed copies at ``example_amounts``),
``example_image`` (its id); ``excluded`` (transform -> the class names left out of its sample,
because the transform can change their label), ``excluded_by`` (transform -> who excluded
them: "the data set", "the workflow" or both, as a sentence fragment).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.schemas import Invariance

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

    from pipeline.data.images import IndexedImages
    from pipeline.experiments.invariance import FeatureLayers

PICTURE_SIDE = 128  # px: the page shows the pictures small


@dataclass(frozen=True)
class Pixels:
    """How the network's input was normalised (to show it as the pixels it saw): its side,
    and the per-channel mean and std."""

    side: int
    mean: Sequence[float]
    std: Sequence[float]


def write_invariance_table(path: Path, model: nn.Module, images: IndexedImages,
                           plan: Mapping[str, Sequence[int]], layers: FeatureLayers,
                           batch_size: int, pixels: Pixels, device: str,
                           excluded: Mapping[str, Sequence[str]] | None = None,
                           excluded_by: Mapping[str, str] | None = None) -> None:
    """Measure each transform's image ids in ``plan`` (transform -> ids) of ``images`` at
    ``layers`` and write ``invariance.parquet`` (see the module doc) at ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.experiments.invariance import (
        TRANSFORMS,
        example_amounts,
        measure,
        transform_image,
    )
    from pipeline.experiments.invariance_sampling import image_order
    from pipeline.progress import progress

    image_ids = image_order(plan)
    # the transforms' example copies are of an image measured under every transform it can be
    everywhere = [i for i in image_ids if all(i in plan.get(t, ()) for t in TRANSFORMS
                                              if plan.get(t))]
    example_image = (everywhere or image_ids)[0]
    frames, pictures, examples = [], {}, {}
    for image_id in progress(image_ids, "invariance", unit="image"):
        image, label = images[image_id][:2]
        transforms = tuple(t for t in TRANSFORMS if image_id in plan.get(t, ()))
        frame = measure(model, image, int(label), layers, batch_size, transforms)
        frame.insert(0, "label", int(label))
        frame.insert(0, "image_id", int(image_id))
        frames.append(frame)
        pictures[str(image_id)] = _png(image, pixels)
        if image_id == example_image:
            examples = {transform: [[float(amount), _png(transform_image(image, transform,
                                                                           float(amount)), pixels)]
                                    for amount in example_amounts(transform, pixels.side)]
                        for transform in TRANSFORMS}
    table = pa.Table.from_pandas(Invariance.conform(pd.concat(frames, ignore_index=True)),
                                 preserve_index=False)
    about = {"layer1": layers.first_label, "last": layers.last_label,
             "last_is_input": layers.last_is_input, "image_size": pixels.side,
             "device": device, "images": pictures, "examples": examples,
             "example_image": int(example_image),
             "excluded": {t: list((excluded or {}).get(t, ())) for t in TRANSFORMS},
             "excluded_by": {t: (excluded_by or {}).get(t, "") for t in TRANSFORMS}}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"invariance": json.dumps(about).encode()})
    pq.write_table(table, path)


def _png(image: torch.Tensor, pixels: Pixels) -> str:
    """A normalised input tensor as the pixels the network saw: base64 PNG (grey, RGB or
    RGBA), at most ``PICTURE_SIDE`` px."""
    from PIL import Image

    from pipeline.models.preprocessing import shown_pixels

    seen = shown_pixels(image, pixels.mean, pixels.std)  # [H, W, C]: grey, RGB or RGBA
    if seen.shape[-1] == 4:
        # a band at a time: Pillow resizes RGBA with its colours premultiplied by alpha
        picture = Image.merge("RGBA", [_fitted(Image.fromarray(seen[..., c])) for c in range(4)])
    else:
        picture = _fitted(Image.fromarray(seen[..., 0] if seen.shape[-1] == 1 else seen))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _fitted(picture: Image.Image) -> Image.Image:
    """``picture`` shrunk (area-averaging) to at most ``PICTURE_SIDE`` px."""
    from PIL import Image

    if max(picture.size) > PICTURE_SIDE:
        picture.thumbnail((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.BOX)
    return picture

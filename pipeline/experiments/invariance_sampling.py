"""Which images the invariance experiment (Figure 5) transforms, transform by transform.

Some classes *are* the property a transform changes: the demo's stripe classes are their
orientation, so an antidiagonal-stripes image rotated by 90 degrees is a diagonal-stripes image,
and a model that says so is right. Drawing such an image's "rotation" curve would read a correct
answer as a lack of invariance. So each transform has its own set of *excluded classes*:

- the workflow's ``[invariance] exclude_translation`` / ``exclude_scale`` / ``exclude_rotation``
  (class names as in ``classes.parquet``), for the user's own data (e.g. ImageNet's few
  orientation-defined classes, if any matter to them);
- plus what the data set declares about itself: the synthetic demo's
  :data:`pipeline.data.synthetic.LABEL_CHANGED_BY` (the four stripe classes, for rotation).

The declaration is read from the code rather than kept as a column of ``classes.parquet``: a new
column would change the prepare stage's output, and with it make every stage of every existing
run stale (training included), for a fact only this stage uses; the invariance stage's stamp
covers ``data.source`` and its revision, which is bumped when the declaration changes.

A transform's images are the evenly spread sample of :func:`sample_images` less the images of
its excluded classes, topped up from the allowed classes not yet represented, so each transform
still gets ``count`` images and the transforms share as many images as they can. Listed
``files`` are taken as given, less those of excluded classes (no top-up: the user chose them).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.experiments.sampling import sample_images

TRANSFORMS = ("translation", "scale", "rotation")


def excluded_classes(class_names: Sequence[str], options: Mapping[str, Sequence[str]],
                     declared: Mapping[str, Sequence[str]] | None = None
                     ) -> dict[str, tuple[str, ...]]:
    """Per transform, the class names left out of its curves (in class order): ``options``
    (transform -> names, the workflow's ``[invariance] exclude_<transform>``) and ``declared``
    (class name -> transforms that change its label, from the data set). A name in ``options``
    that is not a class is a :class:`UserError` naming the option and the nearest class."""
    known = set(class_names)
    wanted: dict[str, set[str]] = {transform: set() for transform in TRANSFORMS}
    for transform, names in options.items():
        for name in names:
            if name not in known:
                near = difflib.get_close_matches(name, list(class_names), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else (
                    "; use the class names the atlas shows (classes.parquet)")
                raise UserError(f"[invariance] exclude_{transform}: {name!r} is not a class "
                                f"of the data{hint}")
            wanted[transform].add(name)
    for name, transforms in (declared or {}).items():
        if name in known:
            for transform in transforms:
                wanted[transform].add(name)
    return {transform: tuple(name for name in class_names if name in wanted[transform])
            for transform in TRANSFORMS}


def transform_images(manifest: pd.DataFrame, readable: np.ndarray, count: int,
                     files: tuple[str, ...], excluded_labels: Mapping[str, set[int]]
                     ) -> dict[str, list[int]]:
    """Per transform, the image ids it is measured on (see the module doc). A transform all of
    whose candidate images are excluded gets none; none for every transform is a
    :class:`UserError`."""
    labels = manifest["label"].to_numpy()
    readable = np.asarray(readable, bool)
    base = list(dict.fromkeys(sample_images(manifest, count, files, readable,
                                            option="[invariance] files")))
    plan: dict[str, list[int]] = {}
    for transform in TRANSFORMS:
        banned = excluded_labels.get(transform, set())
        kept = [i for i in base if int(labels[i]) not in banned]
        missing = count - len(kept)
        if not files and missing > 0:
            used = {int(labels[i]) for i in kept}
            allowed = ~np.isin(labels, list(banned | used)) & readable
            allowed[kept] = False
            kept += sample_images(manifest, missing, (), allowed)
            if len(kept) < count:  # fewer allowed classes than images: repeat classes
                allowed = ~np.isin(labels, list(banned)) & readable
                allowed[kept] = False
                kept += sample_images(manifest, count - len(kept), (), allowed)
        plan[transform] = kept
    if not any(plan.values()):
        raise UserError("[invariance] images: every candidate image's class is excluded from "
                        "every transform; shorten [invariance] exclude_* or list other files")
    return plan


def image_order(plan: Mapping[str, Sequence[int]]) -> list[int]:
    """Every image of ``plan`` once, in order of first appearance (translation's first)."""
    return list(dict.fromkeys(i for transform in TRANSFORMS for i in plan.get(transform, ())))

"""Which analysed images an experiment looks at: the user's list, or a sample spread evenly over
the classes, the same one on every run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import UserError


def sample_images(manifest: pd.DataFrame, count: int, files: tuple[str, ...] = (),
                  readable: np.ndarray | None = None, option: str = "files") -> list[int]:
    """Image ids: those of ``files`` (manifest paths, in the given order), else ``count`` of the
    ``readable`` images spread evenly over the classes and, within a class, over its images.

    A file that is not in the manifest (or not readable) is a :class:`UserError` naming
    ``option`` (e.g. ``"[occlusion] files"``), so a typo is not silently replaced.
    """
    usable = np.ones(len(manifest), bool) if readable is None else np.asarray(readable, bool)
    if files:
        ids = {path: i for i, path in enumerate(manifest["path"].tolist())}
        chosen = []
        for name in files:
            image_id = ids.get(name)
            if image_id is None or not usable[image_id]:
                why = "is not in the manifest" if image_id is None else "could not be read"
                raise UserError(f"{option}: {name!r} {why}; list files as the manifest names "
                                "them (relative to the data root), or leave the list empty to "
                                "sample images")
            chosen.append(image_id)
        return chosen
    frame = pd.DataFrame({"image_id": np.arange(len(manifest)),
                          "label": manifest["label"].to_numpy()})[usable]
    by_class = {int(label): group["image_id"].to_numpy()
                for label, group in frame.groupby("label", sort=True)}
    labels = list(by_class)
    if not labels or count <= 0:
        return []
    # every class gets count // classes; the rest go one each to evenly spaced classes
    base, rest = divmod(count, len(labels))
    picks = dict.fromkeys(labels, base)
    for i in range(rest):
        picks[labels[(i * len(labels)) // rest]] += 1
    chosen = []
    for label in labels:
        ids = by_class[label]
        n = min(picks[label], len(ids))
        chosen.extend(int(ids[int((j + 0.5) * len(ids) / n)]) for j in range(n))
    return chosen


def experiment_images(manifest: pd.DataFrame, readable: np.ndarray, count: int,
                      files: tuple[str, ...], section: str, verb: str) -> list[int]:
    """The image ids an experiment stage (``section``: "occlusion", "invariance") works on:
    :func:`sample_images`, a file listed twice taken once (one page per image); none at all is
    a :class:`UserError` saying what the stage could not ``verb``."""
    image_ids = list(dict.fromkeys(sample_images(manifest, count, files, readable,
                                                 option=f"[{section}] files")))
    if not image_ids:
        raise UserError(f"[{section}] images: no readable analysed image to {verb}; check the "
                        "skipped images on the atlas's index")
    return image_ids

"""Figure 5 is measured only where the answer means invariance: classes a transform can change
are left out of that transform's sample, and curves whose label the model itself says changed
are flagged (cases whose answer is known)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data.synthetic import CLASS_NAMES, LABEL_CHANGED_BY
from pipeline.errors import UserError
from pipeline.experiments.invariance import amounts
from pipeline.experiments.invariance_flags import label_flags
from pipeline.experiments.invariance_sampling import (
    excluded_classes,
    image_order,
    transform_images,
)

STRIPES = [name for name in CLASS_NAMES if name.endswith("_stripes")]


def manifest(per_class: int = 4) -> pd.DataFrame:
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    return pd.DataFrame({"path": [f"{CLASS_NAMES[label]}/{i}.png" for i, label in
                                  enumerate(labels)], "label": labels})


def test_the_demo_declares_its_stripes_orientation_defined():
    assert sorted(LABEL_CHANGED_BY) == sorted(STRIPES)
    excluded = excluded_classes(CLASS_NAMES, {}, LABEL_CHANGED_BY)
    assert excluded == {"translation": (), "scale": (), "rotation": tuple(STRIPES)}


def test_no_rotation_curve_is_of_a_stripe_image_and_every_transform_keeps_its_count():
    frame = manifest()
    excluded = excluded_classes(CLASS_NAMES, {"scale": ("ring",)}, LABEL_CHANGED_BY)
    labels = {name: i for i, name in enumerate(CLASS_NAMES)}
    plan = transform_images(frame, np.ones(len(frame), bool), 5, (),
                            {t: {labels[n] for n in names} for t, names in excluded.items()})
    named = {t: [CLASS_NAMES[frame["label"][i]] for i in ids] for t, ids in plan.items()}
    assert all(len(ids) == 5 for ids in plan.values())
    assert not set(named["rotation"]) & set(STRIPES)
    assert "ring" not in named["scale"] and "ring" in named["translation"]
    # the sample spread over the classes keeps its stripes where they are harmless
    assert set(named["translation"]) & set(STRIPES)
    # the transforms share the images they can: rotation keeps the allowed ones of the others
    shared = set(plan["translation"]) & set(plan["rotation"])
    assert len(shared) == sum(name not in STRIPES for name in named["translation"])
    assert image_order(plan)[:5] == plan["translation"]


def test_listed_files_of_an_excluded_class_skip_only_that_transform():
    frame = manifest()
    files = ("antidiagonal_stripes/36.png", "ring/8.png")
    plan = transform_images(frame, np.ones(len(frame), bool), 5, files, {"rotation": {9}})
    assert plan == {"translation": [36, 8], "scale": [36, 8], "rotation": [8]}


def test_an_unknown_excluded_class_names_the_option_and_the_nearest_class():
    with pytest.raises(UserError, match=r"exclude_rotation: 'rings' .* did you mean 'ring'"):
        excluded_classes(CLASS_NAMES, {"rotation": ("rings",)})


def curve(image_id: int, label: int, predicted: list[int], probs: list[float]) -> pd.DataFrame:
    angles = amounts("rotation", 64)[:len(predicted)]
    return pd.DataFrame({"image_id": image_id, "label": label, "transform": "rotation",
                         "amount": angles, "predicted": predicted, "predicted_prob": probs})


def test_a_confident_stable_other_class_is_flagged_and_noise_is_not():
    antidiagonal, diagonal, ring, cross = 9, 8, 2, 4
    rows = pd.concat([
        # the known case: an antidiagonal image turned 80-100 degrees is diagonal stripes
        curve(1, antidiagonal, [9] * 8 + [8, 8, 8] + [9] * 5,
              [0.9] * 8 + [0.7, 0.95, 0.8] + [0.9] * 5),
        # one confident wrong answer alone is not stable
        curve(2, ring, [2, 2, 4, 2, 2], [0.9, 0.8, 0.9, 0.8, 0.9]),
        # a stable but unsure other class is not confident
        curve(3, ring, [2, 4, 4, 4, 2], [0.9, 0.4, 0.5, 0.45, 0.9]),
        # the original is already called a cross: staying a cross is no label change
        curve(4, ring, [4, 4, 4, 4, 4], [0.9] * 5),
    ], ignore_index=True)
    flags = label_flags(rows)
    assert [(f.image_id, f.other, f.low, f.high, f.steps) for f in flags] == [
        (1, diagonal, 80.0, 100.0, 3)]
    assert flags[0].prob == pytest.approx(0.95)
    assert cross not in [f.other for f in flags]

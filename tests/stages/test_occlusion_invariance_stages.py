"""The occlusion and invariance stages in the tiny demo: what they store, that it is the
computation on the run's own model and images, and one-line refusals of a bad option."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import zarr
from support import run_cli, tiny_demo

from pipeline.config import load_workflow
from pipeline.data.synthetic import LABEL_CHANGED_BY
from pipeline.experiments.occlusion import occluder_grid
from pipeline.experiments.sampling import sample_images
from pipeline.layout import RunLayout
from pipeline.run_inputs import analysed_images, analysed_model


@pytest.fixture(scope="module")
def run(tiny_run):
    workflow = load_workflow(tiny_run / "workflows" / "tiny.toml")
    return workflow, RunLayout(tiny_run, workflow.name)


def test_occlusion_store_holds_the_defaults_maps(run):
    workflow, layout = run
    store = zarr.open_group(layout.occlusion, mode="r")
    attrs = dict(store.attrs)
    assert (attrs["layer"], attrs["size"], attrs["stride"], attrs["grid"]) == \
        ("conv5", 16, 2, [32, 32])
    manifest = pd.read_parquet(layout.manifest)
    readable = zarr.open_group(layout.activations, mode="r")["pred"][:, 0] >= 0
    ids = sample_images(manifest, 16, (), readable)
    assert ids == store["image"][:].tolist()
    assert store["total"].shape == (16, 32, 32) and store["projection"].shape == (16, 64, 64, 3)
    scales = store["projection_scale"][:]
    peaks = np.abs(store["projection"][:].astype(np.float32)).max(axis=(1, 2, 3))
    np.testing.assert_allclose(peaks[scales > 0], 1.0)

    # one image's maps at two positions (a clipped corner, the middle), recomputed by hand
    model = analysed_model(workflow, layout, pd.read_parquet(layout.classes), torch.device("cpu"))
    images = analysed_images(workflow, layout, manifest)
    image, label = images[ids[3]][:2]
    assert store["label"][3] == label
    unit = int(store["tracked_unit"][3])
    grid = occluder_grid((64, 64))
    captured = []
    hook = model.get_submodule(attrs["module"]).register_forward_hook(
        lambda module, args, output: captured.append(output))
    try:
        for i, j in ((0, 0), (16, 15)):
            top, left, bottom, right = grid.box(i, j)
            occluded = image.clone()
            occluded[:, top:bottom, left:right] = 0.0
            with torch.no_grad():
                probabilities = model(occluded[None]).softmax(dim=1)[0]
            total = float(captured[-1][0, unit].sum())
            assert store["total"][3, i, j] == pytest.approx(total, rel=1e-4)
            assert store["prob_true"][3, i, j] == pytest.approx(float(probabilities[label]),
                                                                rel=1e-4)
            assert store["predicted"][3, i, j] == int(probabilities.argmax())
    finally:
        hook.remove()


def test_invariance_table_has_every_transform_of_five_images(run):
    _, layout = run
    table = pq.read_table(layout.invariance)
    about = json.loads(table.schema.metadata[b"invariance"])
    assert (about["layer1"], about["last"], about["last_is_input"]) == \
        ("conv1", "input of classifier.fc7", True)
    # five images per transform; rotation's leave out the stripe classes (their orientation
    # is their class), so it takes two others
    rows = table.to_pandas()
    n_images = rows["image_id"].nunique()
    assert len(about["images"]) == n_images == 7 and len(about["examples"]["rotation"]) == 5
    assert about["excluded"]["rotation"] == sorted(LABEL_CHANGED_BY)
    assert rows.groupby("transform")["image_id"].nunique().to_dict() == {
        "rotation": 5, "scale": 5, "translation": 5}
    assert set(rows.groupby(["image_id", "transform"]).size().groupby("transform").unique()
               .map(tuple)) == {(36,), (9,), (13,)}
    identity = rows[((rows["transform"] == "scale") & (rows["amount"] == 1.0))
                    | ((rows["transform"] != "scale") & (rows["amount"] == 0.0))]
    assert len(identity) == 15 and (identity["distance_last"] == 0).all()


@pytest.fixture(scope="module")
def copied_run(tiny_run, tmp_path_factory):
    """The tiny run up to its activations, copied, so that a failing option leaves the shared
    run alone."""
    base = tmp_path_factory.mktemp("occlusion_errors")
    shutil.copytree(tiny_run / "runs", base / "runs",
                    ignore=shutil.ignore_patterns("projections.zarr"))
    (base / "workflows").mkdir()
    return base


def stamps(base) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((base / "runs" / "tiny" /
                                                             "stamps").glob("*.json"))}


@pytest.mark.parametrize("section, option, named", [
    ("occlusion", 'files = ["nope.png"]', "[occlusion] files"),
    ("occlusion", 'layer = "conv9"', "[occlusion] layer"),
    ("invariance", 'files = ["nope.png"]', "[invariance] files"),
])
@pytest.mark.slow
def test_a_bad_option_exits_2_with_one_line_and_keeps_the_stamps(copied_run, section, option,
                                                                   named):
    (copied_run / "workflows" / "tiny.toml").write_text(
        tiny_demo(f"[{section}]\n{option}\n"), encoding="utf-8")
    before = stamps(copied_run)
    result = run_cli("run", section, "-w", "workflows/tiny.toml", cwd=copied_run)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert stamps(copied_run) == before

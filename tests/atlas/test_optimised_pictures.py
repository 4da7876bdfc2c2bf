"""The featurevis stage's images in the atlas (pipeline.atlas.featurevis_pictures): written
losslessly once per unit and objective, a unit that could not be driven reported and not drawn,
the unit page's "What it wants" before what it found, the layer page's tiles able to show them;
and an atlas without a store as it was.

The small atlas of tests/atlas/optimised_atlas.py; the tiny demo's at the end (slow)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.atlas.context import OptimisedImage
from pipeline.atlas.render import write_atlas
from pipeline.atlas.tiles import binned
from tests.atlas.optimised_atlas import BINNING, STEPS, atlas_context, optimised_atlas


@pytest.fixture(scope="module")
def optimised(tmp_path_factory):
    """(atlas folder, context, the store's arrays)."""
    return optimised_atlas(tmp_path_factory.mktemp("optimised"))


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"  # lossless
        return np.asarray(image.convert("RGB"))


def _unit(context, label: str, unit: int):
    layer = next(layer for layer in context.layers if layer.label == label)
    return layer, next(entry for entry in layer.units if entry.unit == unit)


def _section(html: str) -> str:
    """The unit page's "What it wants" section ("" when it has none)."""
    found = re.search(r'<section class="optimised".*?</section>', html, re.S)
    return found.group(0) if found else ""


def test_pictures_are_the_stored_images_pixel_for_pixel(optimised):
    out, context, arrays = optimised
    _, unit = _unit(context, "conv2", 0)
    mean, centre = unit.optimised_for("mean"), unit.optimised_for("centre")
    assert mean.picture.image == "tiles/conv2/0000-optimised-mean.png"
    assert np.array_equal(_pixels(out / mean.picture.image), arrays["images"][0])
    # the centre's input is binned as the layer's patches are, so it reads at their scale
    expected = np.rint(binned(arrays["centre"][:1], BINNING)[0]).astype(np.uint8)
    assert np.array_equal(_pixels(out / centre.picture.image), expected)
    assert (centre.picture.w, centre.side) == (5, 10)
    assert (mean.peak, mean.data_peak, mean.reach) == (5.0, 2.0, 2.5)


def test_a_unit_not_driven_is_reported_and_not_drawn(optimised):
    out, context, _ = optimised
    _, unit = _unit(context, "conv2", 1)
    mean = unit.optimised_for("mean")
    assert not mean.driven and mean.picture is None
    assert not (out / "tiles/conv2/0001-optimised-mean.png").exists()
    section = _section((out / "units/conv2/1.html").read_text(encoding="utf-8"))
    assert "Not driven: its mean over the map did not rise above where it started (0.01) in " \
           f"{STEPS} steps" in section
    assert "optimised-mean.png" not in section  # no picture of it, only the centre's
    assert section.count("<img") == 1 and "0001-optimised-centre.png" in section
    layer = (out / "layers/conv2.html").read_text(encoding="utf-8")
    card = re.search(r'<li class="card unit[^"]*" id="unit-1".*?</li>', layer, re.S).group(0)
    # its tile shows the receptive field's input, which was driven
    assert "0001-optimised-centre.png" in card and "optimised-mean.png" not in card


def test_the_unit_page_shows_what_it_wants_before_what_it_found(optimised):
    out, _, _ = optimised
    html = (out / "units/conv2/0.html").read_text(encoding="utf-8")
    section = _section(html)
    assert section and html.index(section) < html.index("Top 9 images")
    assert f"{STEPS} Adam steps" in section and "made, not found" in section
    assert "Peak <strong>5.00</strong> on this input, 2.00 at most on the data: " \
           "<strong>2.5×</strong>" in section
    assert "<strong>1.5×</strong>" in section and "did not reach" not in section
    # the centre's picture is drawn at the page's factor, as the patches below it are
    centre = re.search(r'<span class="pcrop optimised-picture" style="([^"]*)"><img '
                       r'src="../../tiles/conv2/0000-optimised-centre.png"', section)
    assert centre and "--k:8" in centre.group(1) and "drawn at the scale of the patches" in section
    # below its range on the data: said so; dead on the data: said so
    short = _section((out / "units/conv2/1.html").read_text(encoding="utf-8"))
    assert "<strong>0.25×</strong>, so the optimisation did not reach the unit's range" in short
    dead = _section((out / "units/conv2/2.html").read_text(encoding="utf-8"))
    assert "while it never fires on the data set" in dead and dead.count("<img") == 2


def test_units_and_layers_not_in_the_store_show_nothing_of_it(optimised, tmp_path):
    out, context, _ = optimised
    assert _unit(context, "conv2", 3)[1].optimised == ()
    assert _section((out / "units/conv2/3.html").read_text(encoding="utf-8")) == ""
    plain = atlas_context(tmp_path)
    assert context.layers[1] == plain.layers[1]  # conv3: not in the store
    assert [layer.n_optimised for layer in context.layers] == [3, 0]
    conv3 = (out / "layers/conv3.html").read_text(encoding="utf-8")
    assert "optimised-space" not in conv3 and "optimised-switch" not in conv3
    conv2 = (out / "layers/conv2.html").read_text(encoding="utf-8")
    card = re.search(r'<li class="card unit[^"]*" id="unit-3".*?</li>', conv2, re.S).group(0)
    assert "not optimised" in card


def test_tiles_hold_the_optimised_input_behind_a_switch_kept_in_the_address(optimised):
    out, _, _ = optimised
    layer = (out / "layers/conv2.html").read_text(encoding="utf-8")
    assert re.search(r'<label class="optimised-switch" hidden><input type="checkbox" '
                     r'name="tiles" value="optimised" data-display', layer)
    assert "(3 of 4 units)" in layer
    # every live tile has the space, the picture lazy (loaded only when shown)
    assert layer.count('class="tile-grids with-optimised"') == 3
    picture = re.search(r'<span class="cellgrid optimised-space"[^>]*>(.*?)</span></span>',
                        layer, re.S).group(1)
    assert 'src="../tiles/conv2/0000-optimised-centre.png"' in picture
    assert 'loading="lazy"' in picture
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "optimised-switch" in index and "0000-optimised-centre.png" in index
    script = (out / "assets/atlas.js").read_text(encoding="utf-8")
    assert 'tiles: ["projections", "optimised"]' in script


def test_an_atlas_without_a_store_is_as_before(tmp_path):
    out = tmp_path / "plain"
    write_atlas(atlas_context(out), out)
    assert not list(out.rglob("*optimised*"))
    for page in out.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        for trace in ("What it wants", "optimised-space", "optimised-switch", "with-optimised"):
            assert trace not in html, (page, trace)


def test_the_data_files_hold_the_numbers(optimised, tmp_path):
    out, _, _ = optimised
    summary = json.loads((out / "data/atlas.json").read_text(encoding="utf-8"))
    assert summary["run"]["optimisation"] == {"steps": STEPS, "lr": pytest.approx(0.05)}
    units = {unit["unit"]: unit for unit in summary["layers"][0]["units"]}
    assert [(o["objective"], o["driven"], o["picture"]) for o in units[1]["optimised"]] == [
        ("mean", False, None), ("centre", True, "tiles/conv2/0001-optimised-centre.png")]
    assert units[0]["optimised"][0]["peak"] == 5.0 and "optimised" not in units[3]
    plain = tmp_path / "plain"
    write_atlas(atlas_context(plain), plain)
    summary = json.loads((plain / "data/atlas.json").read_text(encoding="utf-8"))
    assert "optimisation" not in summary["run"]
    assert all("optimised" not in unit for layer in summary["layers"] for unit in layer["units"])


def test_reach_is_none_for_a_unit_that_never_fires_on_the_data():
    image = OptimisedImage("mean", True, None, 16, peak=3.0, data_peak=0.0, value=1.0, start=0.0)
    assert image.reach is None
    assert dataclasses.replace(image, data_peak=4.0).reach == 0.75


# -- the tiny demo's run: the render stage with the featurevis stage on, and off ---------------


def test_the_tiny_atlas_draws_the_stores_images(tiny_run):
    import zarr

    store = zarr.open_group(tiny_run / "runs/tiny/featurevis.zarr", mode="r")
    atlas = tiny_run / "reports/tiny"
    for label, group in store.groups():
        units, driven = group["unit"][:], group["driven"][:]
        assert len(units) > 0
        for i in (0, len(units) - 1):
            path = atlas / f"tiles/{label}/{int(units[i]):04d}-optimised-mean.png"
            assert path.exists() == bool(driven[0, i])
            if driven[0, i]:
                assert np.array_equal(_pixels(path), group["images"][i])
            page = (atlas / f"units/{label}/{int(units[i])}.html").read_text(encoding="utf-8")
            assert "What it wants" in page


def test_the_render_stage_leaves_the_store_out_when_the_stage_is_off(tiny_run, tmp_path):
    from pipeline.config import load_workflow
    from pipeline.layout import RunLayout
    from pipeline.stages import get_stage
    from pipeline.stages.context import StageContext

    base = tmp_path / "base"
    shutil.copytree(tiny_run / "workflows", base / "workflows")
    shutil.copytree(tiny_run / "runs", base / "runs", symlinks=True)
    workflow = load_workflow(base / "workflows" / "tiny.toml")
    workflow = dataclasses.replace(
        workflow, featurevis=dataclasses.replace(workflow.featurevis, enabled=False),
        render=dataclasses.replace(workflow.render, workers=1))
    layout = RunLayout(base, workflow.name)
    assert (layout.featurevis / "zarr.json").exists()  # an earlier run's store, not shown
    get_stage("render").func(StageContext(workflow, layout, get_stage("render"), key="off"))
    atlas = layout.staging(layout.report_dir)
    assert not list(atlas.rglob("*optimised*"))
    for name in ("index.html", "layers/conv3.html", "units/conv3/1.html"):
        html = (atlas / name).read_text(encoding="utf-8")
        assert "What it wants" not in html and "optimised-s" not in html, name

"""The tiny demo's atlas in a real Chromium: every experiment is one click from every page's
header (index, layer, unit and experiment pages; file:// and under a URL prefix), the search
finds the experiments' pages, the invariance page keeps the stripe classes out of its rotation
curves and shows its values on tap, and the unit tables and the whole atlas can be taken away
as CSV and JSON."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from playwright.sync_api import expect

from pipeline.data.synthetic import LABEL_CHANGED_BY

EXPERIMENTS = {"Evolution": "evolution/", "Invariance": "invariance.html",
               "Occlusion": "occlusion/index.html"}


@pytest.fixture(params=["file", "prefix"])
def base(request, atlas) -> str:
    return atlas.as_uri() + "/" if request.param == "file" else request.getfixturevalue("served")


def _pages(tiny_run) -> list[str]:
    units = pd.read_parquet(tiny_run / "runs" / "tiny" / "units.parquet")
    live = units[~units["dead"]].iloc[0]
    return ["index.html", "layers/conv2.html", f"units/{live['layer']}/{live['unit']}.html",
            "invariance.html", "occlusion/index.html", "evolution/conv1.html"]


def test_the_header_reaches_every_experiment_from_every_kind_of_page(watch, base, tiny_run):
    watched = watch(base)
    page = watched.page
    for start in _pages(tiny_run):
        for title, target in EXPERIMENTS.items():
            watched.open(base + start)
            link = page.locator(".experiment-nav a", has_text=title)
            expect(link).to_have_count(1)
            expect(link).to_be_visible()
            watched.follow(link)
            expect(page).to_have_url(re.compile(re.escape(base + target)))
            expect(page.locator(".experiment-nav a", has_text=title)).to_have_attribute(
                "aria-current", "page")
            expect(page.locator("h1")).to_be_visible()
    assert watched.problems == [] and watched.blocked == []


def test_the_header_fits_a_phone_with_the_experiments_in_it(watch, atlas):
    watched = watch(atlas.as_uri(), viewport={"width": 360, "height": 740}, has_touch=True,
                    is_mobile=True)
    page = watched.page
    for name in ("index.html", "invariance.html", "layers/conv3.html"):
        watched.open((atlas / name).as_uri())
        for title in EXPERIMENTS:
            link = page.locator(".experiment-nav a", has_text=title)
            expect(link).to_be_visible()
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 360, (name, title, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.locator(".experiment-nav a", has_text="Occlusion").tap()
    expect(page).to_have_url((atlas / "occlusion" / "index.html").as_uri())


@pytest.mark.parametrize("query, title", [("occlusion", "Occlusion"), ("invariance", "Invariance"),
                                          ("rotation", "Invariance"), ("evolution", "Evolution"),
                                          ("training", "Evolution")])
def test_search_finds_the_experiments_pages(watch, base, query, title):
    watched = watch(base)
    page = watched.page
    watched.open(base + "layers/conv2.html")
    page.locator("#search").fill(query)
    result = page.locator("#search-results a", has_text=title)
    expect(result).to_have_count(1)
    expect(result).to_be_visible()
    page.locator("#search").press("Enter")
    expect(page).to_have_url(re.compile(re.escape(base + EXPERIMENTS[title])))
    assert watched.problems == [] and watched.blocked == []


def test_rotation_leaves_out_the_stripes_and_the_page_says_so(watched, atlas, tiny_run):
    run = tiny_run / "runs" / "tiny"
    rows = pd.read_parquet(run / "invariance.parquet")
    classes = pd.read_parquet(run / "classes.parquet")["name"].tolist()
    named = rows.assign(name=[classes[label] for label in rows["label"]])
    rotated = set(named.loc[named["transform"] == "rotation", "name"])
    assert rotated and not rotated & set(LABEL_CHANGED_BY)
    shifted = set(named.loc[named["transform"] == "translation", "name"])
    assert shifted & set(LABEL_CHANGED_BY)  # only the transform that changes them leaves them out
    for transform in ("translation", "scale", "rotation"):
        assert named.loc[named["transform"] == transform, "image_id"].nunique() == 5

    watched.open((atlas / "invariance.html").as_uri())
    page = watched.page
    note = page.locator("section:has(#inv-rotation) .inv-excluded")
    expect(note).to_be_visible()
    for name in LABEL_CHANGED_BY:
        expect(note).to_contain_text(name)
    expect(page.locator("section:has(#inv-translation) .inv-excluded")).to_have_count(0)
    # rotation draws one line per rotated image, in the colour of its image
    expect(page.locator("section:has(#inv-rotation) svg").first.locator(".inv-series")) \
        .to_have_count(5)


def test_an_invariance_point_shows_its_values_on_tap_and_in_a_table(watch, atlas):
    watched = watch(atlas.as_uri(), has_touch=True)
    page = watched.page
    watched.open((atlas / "invariance.html").as_uri())
    dot = page.locator("section:has(#inv-rotation) circle.inv-dot").nth(9)  # at 90 degrees
    dot.scroll_into_view_if_needed()
    # lines cross: the tap lands on whichever image's 90-degree point is on top, as a finger's
    # would, so it is not required to be this one
    dot.tap(force=True)
    tip = page.locator("#atlas-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("90°")
    expect(tip).to_contain_text("predicted")
    page.keyboard.press("Escape")
    expect(tip).to_be_hidden()
    # the same values, reachable by keyboard: the table under the transform
    summary = page.locator("section:has(#inv-rotation) .inv-values summary")
    summary.focus()
    page.keyboard.press("Enter")
    table = page.locator("section:has(#inv-rotation) .inv-table").first
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(36)
    assert watched.problems == [] and watched.blocked == []


def test_each_layers_csv_is_its_units_table(watched, atlas, tiny_run):
    units = pd.read_parquet(tiny_run / "runs" / "tiny" / "units.parquet")
    for label, expected in units.groupby("layer"):
        table = pd.read_csv(atlas / "data" / f"{label}.csv")
        expected = expected.sort_values("unit").reset_index(drop=True)
        assert table["unit"].tolist() == expected["unit"].tolist()
        assert table["dead"].tolist() == expected["dead"].tolist()
        for column in ("peak", "mean_max", "std_max", "frac_active", "top_class_share",
                       "class_entropy"):
            pd.testing.assert_series_equal(table[column], expected[column].astype(float),
                                           check_names=False, rtol=1e-6)
        assert table["n_selectivity"].tolist() == expected["n_selectivity"].tolist()
        quantiles = [c for c in expected.columns if c.startswith("q")]
        assert quantiles and set(quantiles) <= set(table.columns)
        live = ~table["dead"]
        assert table.loc[live, "shown_class"].notna().all()
        assert set(table.loc[~live, "shown_class"].dropna()) == set()
    # linked and described on the layer page and the index
    watched.open((atlas / "layers" / "conv2.html").as_uri())
    link = watched.page.locator('.data-links a[href="../data/conv2.csv"]')
    expect(link).to_be_visible()
    expect(watched.page.locator(".data-links")).to_contain_text("peak")
    watched.open((atlas / "index.html").as_uri())
    expect(watched.page.locator('.data-links a[href="data/atlas.json"]')).to_be_visible()


def test_the_atlas_json_has_every_unit_and_its_top_images(atlas, tiny_run):
    units = pd.read_parquet(tiny_run / "runs" / "tiny" / "units.parquet")
    data = json.loads((atlas / "data" / "atlas.json").read_text(encoding="utf-8"))
    assert data["format"].startswith("deconv-atlas-export/")
    assert data["model"]["name"] == "zfnet_small" and data["data"]["n_classes"] == 10
    seen = {(layer["label"], unit["unit"]) for layer in data["layers"] for unit in layer["units"]}
    assert seen == set(zip(units["layer"], units["unit"], strict=True))
    live = next(unit for unit in data["layers"][1]["units"] if not unit["dead"])
    assert 1 <= len(live["top_images"]) <= 9 and live["top_images"][0]["rank"] == 1
    assert {"file", "true_class", "predicted_class", "value"} <= set(live["top_images"][0])
    assert [e["title"] for e in data["experiments"]] == [
        "Feature evolution (Figure 4)", "Invariance (Figure 5)", "Occlusion (Figure 7)"]
    assert str(tiny_run) not in (atlas / "data" / "atlas.json").read_text(encoding="utf-8")

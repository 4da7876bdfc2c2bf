"""The occlusion (Figure 7) and invariance (Figure 5) pages of the tiny demo's atlas in a real
Chromium: from file://, every image loads with no error, the pages are linked from the index and
from the tracked units, and a phone needs no horizontal scroll."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr


@pytest.fixture(scope="module")
def occluded(tiny_run) -> dict:
    store = zarr.open_group(tiny_run / "runs" / "tiny" / "occlusion.zarr", mode="r")
    return {"ids": [int(i) for i in store["image"][:]], "units": store["tracked_unit"][:].tolist(),
            "labels": store["label"][:].tolist(), "predicted": store["predicted"][:],
            "layer": store.attrs["layer"]}


def test_index_links_both_pages(watched, atlas):
    watched.open((atlas / "index.html").as_uri())
    links = watched.page.locator(".experiment a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert "occlusion/index.html" in hrefs and "invariance.html" in hrefs
    watched.load_every_image()
    watched.follow(watched.page.locator('.experiment a[href="occlusion/index.html"]'))
    watched.page.wait_for_url("**/occlusion/index.html")
    assert watched.problems == [] and watched.blocked == []


def test_every_occlusion_page_loads_every_image(watched, atlas, occluded):
    watched.open((atlas / "occlusion" / "index.html").as_uri())
    assert watched.load_every_image() == 1 + len(occluded["ids"])  # the header's icon, images
    pages = watched.page.locator(".occ-item a:not([href*='units/'])")
    hrefs = [pages.nth(i).get_attribute("href") for i in range(pages.count())]
    assert hrefs == [f"../occlusion/{i}.html" for i in occluded["ids"]]
    for image_id in occluded["ids"]:
        watched.open((atlas / "occlusion" / f"{image_id}.html").as_uri())
        # the header's icon; (a) input, (b) (d) (e) the image and its map each, (c) projection
        assert watched.load_every_image() == 9
        page = watched.page
        assert page.locator(".occ-panel").count() == 5
        assert page.locator(".occ-map").count() == 3
    assert watched.problems == [] and watched.blocked == []


def test_class_map_has_a_legend_naming_its_classes(watched, atlas, occluded, tiny_run):
    classes = pd.read_parquet(tiny_run / "runs" / "tiny" / "classes.parquet")["name"].tolist()
    image_id, label = occluded["ids"][0], occluded["labels"][0]
    watched.open((atlas / "occlusion" / f"{image_id}.html").as_uri())
    names = watched.page.locator(".occ-classes .occ-class-name").all_inner_texts()
    won = {classes[c] for c in np.unique(occluded["predicted"][0])}
    shown = {name.replace("(true class)", "").strip() for name in names}
    assert won <= shown | {"other classes"}
    assert names[0].endswith("(true class)") and names[0].startswith(classes[label])
    # the legend's colours are those of the map's pixels
    assert watched.page.locator(".occ-swatch").count() == len(names)


def test_a_tracked_unit_links_to_its_occlusion_page(watched, atlas, occluded):
    image_id, unit = occluded["ids"][0], occluded["units"][0]
    watched.open((atlas / "units" / occluded["layer"] / f"{unit}.html").as_uri())
    link = watched.page.locator(f'.unit-links a[href="../../occlusion/{image_id}.html"]')
    assert link.count() == 1 and link.inner_text().startswith("occlusion of ")
    watched.load_every_image()
    watched.follow(link)
    watched.page.wait_for_url(f"**/occlusion/{image_id}.html")
    # and the page links back to the unit
    back = watched.page.locator(f'a[href="../units/{occluded["layer"]}/{unit}.html"]')
    assert back.count() >= 1
    assert watched.problems == [] and watched.blocked == []


def test_invariance_page_draws_nine_charts_with_a_line_per_image(watched, atlas, tiny_run):
    rows = pd.read_parquet(tiny_run / "runs" / "tiny" / "invariance.parquet")
    n_images = rows["image_id"].nunique()
    # 5 images per transform; rotation's leave out the stripe classes, so more in all
    n_each = 5
    assert n_images > n_each and len(rows) == n_each * (13 + 9 + 36)
    watched.open((atlas / "invariance.html").as_uri())
    # the header's icon, the images, the examples of each transform
    assert watched.load_every_image() == 1 + n_images + 3 * 5
    page = watched.page
    assert page.locator(".inv-chart svg").count() == 9
    assert page.locator(".inv-chart polyline").count() == 9 * n_each
    # every point of the rotation's P(true) chart is drawn, with its tip
    assert page.locator(".inv-section").nth(2).locator(".inv-chart").nth(2).locator(
        "circle[data-tip]").count() == 36 * n_each
    labels = page.locator(".inv-axis-label").all_text_contents()
    assert {"shift down (px)", "scale (×)", "rotation (degrees)"} <= set(labels)
    assert watched.problems == [] and watched.blocked == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_width_has_no_horizontal_scroll(browser, atlas, occluded, scheme):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  color_scheme=scheme)
    page = context.new_page()
    for name in ("occlusion/index.html", f"occlusion/{occluded['ids'][0]}.html",
                 "invariance.html"):
        page.goto((atlas / name).as_uri())
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} is {width}px wide on a 390px screen"
    # chart text follows the theme: its colour is not the background's
    text = page.evaluate("getComputedStyle(document.querySelector('.inv-tick')).fill")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert text != background
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_at_least_4_5_in_both_themes(watch, atlas, occluded, scheme):
    contrast = (Path(__file__).with_name("contrast.js")).read_text(encoding="utf-8")
    watched = watch(atlas.as_uri(), color_scheme=scheme)
    rows = []
    for name in ("occlusion/index.html", f"occlusion/{occluded['ids'][0]}.html",
                 "invariance.html"):
        watched.open((atlas / name).as_uri())
        measured = watched.page.evaluate(contrast)
        assert len(measured) > 20
        rows += [(r["ratio"], name, r["what"], r["fg"], r["bg"]) for r in measured]
    assert any("text" in row[2] for row in rows)  # the charts' SVG text was measured
    worst = min(rows)
    assert worst[0] >= 4.5, worst
    assert watched.problems == []

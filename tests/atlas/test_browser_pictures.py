"""What the atlas shows, in headless Chromium from file:// with the network blocked (and the
main pages under a URL prefix): pictures first, layer 1 as in the paper, honest class labels,
where a unit fires, projection methods side by side."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from playwright.sync_api import expect

from pipeline.atlas.gather import dominant_class


def _units(tiny_run) -> pd.DataFrame:
    return pd.read_parquet(tiny_run / "runs" / "tiny" / "units.parquet")


@pytest.mark.parametrize(("width", "height", "scheme"),
                         [(1440, 900, "light"), (390, 844, "dark")])
def test_index_opens_with_a_strip_of_pictures_per_layer(watch, atlas, served, width, height,
                                                        scheme):
    for base in (atlas.as_uri() + "/", served):
        watched = watch(base, viewport={"width": width, "height": height},
                        is_mobile=width < 600, color_scheme=scheme)
        page = watched.page
        watched.open(base + "index.html")
        # every drawn picture loads (scrolled to: those far below the fold are lazy)
        assert watched.load_every_image() > 0
        page.evaluate("window.scrollTo(0, 0)")
        strips = page.locator(".strip")
        assert strips.count() == 5  # one per layer
        # the first picture drawn (a cell: the sheet inside it is larger, and clipped)
        first = page.locator(".strip-tiles .pcell, .strip-tiles .pcrop").first.bounding_box()
        assert first["y"] + first["height"] <= height, "the first picture is below the fold"
        # the pictures come before the model, data and run cards
        assert page.locator(".cards").bounding_box()["y"] > first["y"]
        # every strip's pictures link to units of its layer; no horizontal scroll of the page
        for i in range(5):
            hrefs = strips.nth(i).locator(".strip-tiles li:not(.strip-more) a").evaluate_all(
                "els => els.map(e => e.getAttribute('href'))")
            assert hrefs and all(h.startswith(f"units/conv{i + 1}/") for h in hrefs)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert watched.problems == [] and watched.blocked == []


def test_cards_name_a_class_only_when_it_dominates(watched, atlas, tiny_run):
    units = _units(tiny_run)
    classes = pd.read_parquet(tiny_run / "runs" / "tiny" / "classes.parquet")["name"].tolist()
    labels = pd.read_parquet(tiny_run / "runs" / "tiny" / "manifest.parquet")["label"]
    priors = labels.value_counts(normalize=True)
    checked = named = 0
    for label in ("conv2", "conv5"):
        watched.open((atlas / "layers" / f"{label}.html").as_uri())
        shown = dict(watched.page.locator("ol.units > li:not(.dead)").evaluate_all(
            "els => els.map(e => [+e.dataset.unit, "
            "(e.querySelector('.top-class') || {}).textContent || ''])"))
        for row in units[(units["layer"] == label) & ~units["dead"]].itertuples():
            expected = "mixed"
            if row.top_class >= 0 and dominant_class(row.top_class_share, row.n_selectivity,
                                                     priors[row.top_class]):
                expected = classes[row.top_class]
                named += 1
            if row.top_class >= 0:
                assert shown[row.unit] == expected, (label, row.unit)
                checked += 1
    assert checked > 40
    assert watched.problems == []


def test_layer_one_shows_each_filter_once_and_a_linked_filter_grid(watched, atlas):
    page = watched.page
    watched.open((atlas / "layers" / "conv1.html").as_uri())
    links = page.locator(".filter-grid a")
    assert links.count() == 16
    assert links.nth(5).get_attribute("href") == "../units/conv1/5.html"
    # as square as the paper's grid: 16 filters in 4 columns and 4 rows
    boxes = [links.nth(i).bounding_box() for i in range(16)]
    assert len({round(b["x"]) for b in boxes}) == 4 and len({round(b["y"]) for b in boxes}) == 4
    assert "filter ±" in page.locator("#unit-3 .unit-meta").inner_text()
    watched.follow(links.nth(5))
    page.wait_for_url("**/units/conv1/5.html")
    watched.load_every_image()
    # the filter once, no projections; the patches and the images remain
    assert page.locator(".unit-filter .pcrop").count() == 1
    assert page.locator(".trio .proj").count() == 0
    assert page.locator(".trio .patch").count() == page.locator(".top-image").count() > 0
    assert watched.problems == [] and watched.blocked == []


def test_unit_page_overlays_the_activation_map_on_each_image(watched, atlas):
    watched.open((atlas / "units" / "conv3" / "4.html").as_uri())
    watched.load_every_image()
    page = watched.page
    n = page.locator(".top-image").count()
    assert n > 0 and page.locator(".thumb-wrap .heat img").count() == n
    for i in range(n):
        thumb = page.locator(".thumb-wrap").nth(i).bounding_box()
        heat = page.locator(".thumb-wrap .heat").nth(i).bounding_box()
        # conv3's 8 x 8 map, one cell per 8 px centred on each field, covers the 64 px image
        # from -3.5 px: as wide as the image, shifted by less than half a cell
        assert abs(heat["width"] - thumb["width"]) < 1.5
        assert abs(heat["x"] - (thumb["x"] - thumb["width"] * 3.5 / 64)) < 1.5
    # the map is drawn from the unit's own map sheet, pixelated (cells, not a blur)
    rendering = page.locator(".heat .crop img").first.evaluate(
        "e => getComputedStyle(e).imageRendering")
    assert rendering == "pixelated"
    assert watched.problems == [] and watched.blocked == []


def test_patch_is_dropped_when_the_field_covers_the_whole_image(watched, atlas):
    # conv5's receptive field (83 px) is larger than the 64 px input: its patch is the image
    watched.open((atlas / "units" / "conv5" / "2.html").as_uri())
    assert watched.page.locator(".trio .patch").count() == 0
    assert watched.page.locator(".trio .thumb-wrap").count() > 0
    watched.open((atlas / "units" / "conv3" / "2.html").as_uri())
    assert watched.page.locator(".trio .patch").count() == watched.page.locator(
        ".top-image").count()


def test_methods_switch_on_unit_pages(watch, atlas, served):
    for base in (atlas.as_uri() + "/", served):
        check = watch(base)
        page = check.page
        check.open(base + "units/conv4/6.html")
        check.load_every_image()
        visible = ("els => els.filter(e => e.offsetParent !== null)"
                   ".map(e => e.dataset.method)")
        first = page.locator(".trio").first.locator(".proj")
        assert first.count() == 3
        assert first.evaluate_all(visible) == ["deconvnet"]
        page.locator("input[name=method][value=guided]").check()
        check.until(lambda first=first, visible=visible:
                    first.evaluate_all(visible) == ["guided"])
        assert first.evaluate_all(visible) == ["guided"]
        page.locator("input[name=method][value=gradient]").check()
        check.until(lambda first=first, visible=visible:
                    first.evaluate_all(visible) == ["gradient"])
        assert first.evaluate_all(visible) == ["gradient"]
        sources = first.locator("img.curve-linear").evaluate_all("els => els.map(e => e.src)")
        assert len(set(sources)) == 3  # three different pictures (each also in the other curve)
        assert check.problems == [] and check.blocked == []


def test_a_click_shows_a_picture_alone_at_full_resolution(watched, atlas):
    watched.open((atlas / "units" / "conv3" / "4.html").as_uri())
    watched.load_every_image()
    page = watched.page
    for selector in (".trio > .proj", ".trio > .patch", ".trio > .thumb-wrap"):
        cell = page.locator(selector).first
        # a drawn picture's stored width is its --w (set on it or on its row); a thumbnail's
        # is its data-w
        stored = cell.evaluate("e => e.classList.contains('thumb-wrap') ? "
                               "+e.querySelector('.crop').dataset.w : "
                               "+getComputedStyle(e).getPropertyValue('--w')")
        cell.click()
        zoomed = page.locator(".zoom .zoomed")
        zoomed.wait_for()
        box = zoomed.bounding_box()
        factor = box["width"] / stored
        # a whole enlargement of the stored pixels, as large as the window allows
        assert factor >= 1 and abs(factor - round(factor)) < 1e-6
        assert box["width"] <= 1280 and box["height"] <= 900
        assert (round(factor) + 1) * stored > 0.92 * 1280 or \
            (round(factor) + 1) * box["height"] / factor > 0.8 * 900
        if selector.endswith("thumb-wrap"):  # the map and the field come along
            assert page.locator(".zoom .heat img").count() == 1
            assert page.locator(".zoom .rf-box").count() == 1
        page.keyboard.press("Escape")
        expect(page.locator(".zoom")).to_have_count(0)
    # by keyboard too; arrows do not leave the page while a picture is open
    page.locator(".trio > .patch").nth(1).focus()
    page.keyboard.press("Enter")
    page.locator(".zoom").wait_for()
    page.keyboard.press("ArrowRight")
    expect(page).to_have_url(re.compile(r"/units/conv3/4\.html$"))
    page.locator(".zoom").click()
    expect(page.locator(".zoom")).to_have_count(0)
    assert watched.problems == [] and watched.blocked == []


def test_the_chosen_method_and_maps_toggle_follow_to_the_next_unit(watched, atlas):
    page = watched.page
    watched.open((atlas / "units" / "conv4" / "6.html").as_uri())
    page.locator("input[name=method][value=gradient]").check()
    page.locator("input[name=heat]").uncheck()
    expect(page).to_have_url(re.compile(r"#method=gradient&maps=0$"))
    watched.load_every_image()
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/units/conv4/7.html#method=gradient&maps=0")
    expect(page.locator("input[name=method][value=gradient]")).to_be_checked()
    expect(page.locator("input[name=heat]")).not_to_be_checked()
    expect(page.locator(".heat").first).to_be_hidden()
    visible = page.locator(".trio").first.locator(".proj").evaluate_all(
        "els => els.filter(e => e.offsetParent !== null).map(e => e.dataset.method)")
    assert visible == ["gradient"]
    # the pager links carry the choice too; choosing the defaults again drops it
    expect(page.locator('a[rel="prev"]').first).to_have_attribute(
        "href", re.compile(r"6\.html#method=gradient&maps=0$"))
    page.locator("input[name=method][value=deconvnet]").check()
    page.locator("input[name=heat]").check()
    expect(page).not_to_have_url(re.compile("#"))
    expect(page.locator('a[rel="prev"]').last).to_have_attribute("href", re.compile(r"6\.html$"))
    assert watched.problems == []

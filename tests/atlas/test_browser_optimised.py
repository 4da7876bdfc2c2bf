"""The optimised inputs (the featurevis stage) in a real headless Chromium: the unit page's
"What it wants" panel before its top images, drawn pixel for pixel and at the patches' scale;
a unit that could not be driven reported in words; the layer page's switch, kept in the address
and carried to the next page, with the other controls still working; a phone and both themes.

The tiny demo's atlas (conftest.py), and for the units that could not be driven or were not
optimised, the small atlas of tests/atlas/optimised_atlas.py."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image
from playwright.sync_api import expect

from tests.atlas.optimised_atlas import optimised_atlas

pytestmark = pytest.mark.slow

CONTRAST = Path(__file__).with_name("contrast.js").read_text(encoding="utf-8")
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
LAYER = "conv3"  # its receptive field is inside the input: its patches are drawn


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The small atlas with a unit not driven (conv2/1) and one not optimised (conv2/3)."""
    return optimised_atlas(tmp_path_factory.mktemp("optimised"))[0]


def _store(atlas: Path):
    return zarr.open_group(atlas.parent.parent / "runs" / "tiny" / "featurevis.zarr", mode="r")


def _driven_unit(atlas: Path, label: str) -> tuple[int, int]:
    """(unit, position in the store) of the first unit of ``label`` driven by both objectives."""
    group = _store(atlas)[label]
    position = int(np.flatnonzero(group["driven"][:].all(axis=0))[0])
    return int(group["unit"][position]), position


def _drawn(locator) -> np.ndarray:
    """What the browser drew for an element, as uint8 RGB (device pixels = CSS pixels)."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    clip = {key: round(box[key]) for key in ("x", "y", "width", "height")}
    return np.asarray(Image.open(io.BytesIO(locator.page.screenshot(clip=clip))).convert("RGB"))


def _no_sideways_scroll(page) -> None:
    widths = page.evaluate("[window.innerWidth, document.documentElement.scrollWidth]")
    assert widths[0] == PHONE["viewport"]["width"] and widths[1] <= widths[0], widths


def test_the_unit_page_shows_what_it_wants_first_pixel_for_pixel(watched, atlas):
    unit, position = _driven_unit(atlas, LAYER)
    page = watched.page
    watched.open((atlas / "units" / LAYER / f"{unit}.html").as_uri())
    panel = page.locator("section.optimised")
    expect(panel).to_be_visible()
    expect(panel.locator("h2")).to_have_text("What it wants")
    expect(panel).to_contain_text("made, not found")
    top = page.locator("ol.top-images")
    expect(top).to_be_visible()
    assert panel.bounding_box()["y"] < top.bounding_box()["y"]  # what it wants, then found
    assert watched.load_every_image() > 0
    mean = panel.locator(".optimised-mean .pcrop")
    centre = panel.locator(".optimised-centre .pcrop")
    expect(mean.locator("img")).to_have_attribute("src", re.compile(r"-optimised-mean\.png$"))
    # drawn pixel for pixel at a whole factor: the screen holds the stored image
    group = _store(atlas)[LAYER]
    stored = group["images"][position]
    drawn = _drawn(mean)
    factor = drawn.shape[0] // stored.shape[0]
    assert factor >= 1 and drawn.shape[:2] == (stored.shape[0] * factor,) * 2
    assert np.array_equal(drawn[factor // 2::factor, factor // 2::factor], stored)
    # the centre's input (the receptive field and a margin) at the scale of the patches below:
    # each stored pixel (binned as the patches are) as large as a patch's
    patch = page.locator(".trio .patch").first
    width, factor = (f"e => +getComputedStyle(e).getPropertyValue('--{name}')"
                     for name in ("w", "k"))
    assert centre.evaluate(factor) == patch.evaluate(factor) > 0
    assert centre.evaluate(width) >= patch.evaluate(width) > 0  # the field, and the margin
    assert centre.bounding_box()["width"] / centre.evaluate(width) == pytest.approx(
        patch.bounding_box()["width"] / patch.evaluate(width))
    # the numbers: its peak on the input against its largest on the data
    peak, data_peak = group["peak"][0, position], group["data_peak"][position]
    expect(panel.locator(".optimised-mean .reach")).to_contain_text(
        f"{peak / data_peak:.1f}×" if peak >= data_peak else f"{peak / data_peak:.2f}×")
    # a click shows it alone, larger; Escape closes it
    mean.click()
    zoom = page.locator(".zoom")
    expect(zoom).to_be_visible()
    expect(zoom).to_contain_text(f"{stored.shape[1]} × {stored.shape[0]} px stored")
    page.keyboard.press("Escape")
    expect(zoom).to_have_count(0)
    assert watched.problems == [] and watched.blocked == []


def test_the_switch_shows_optimised_inputs_in_the_tiles_and_follows_the_reader(watched, atlas):
    page = watched.page
    url = (atlas / "layers" / f"{LAYER}.html").as_uri()
    watched.open(url)
    switch = page.locator('input[name="tiles"]')
    expect(switch).to_be_visible()
    expect(switch).not_to_be_checked()
    first = page.locator("ol.units > li:not(.dead)").first
    grid = first.locator(".tile-grids > .cellgrid:not(.optimised-space)")
    optimised = first.locator(".tile-grids > .optimised-space")
    expect(grid).to_be_visible()
    expect(optimised).to_be_hidden()
    # where the card is in the page (not in the window: checking the switch may scroll)
    placed = ("e => { const r = e.getBoundingClientRect(); "
              "return [r.x + scrollX, r.y + scrollY, r.width, r.height]; }")
    before = first.evaluate(placed)

    switch.check()
    expect(page).to_have_url(re.compile(r"#tiles=optimised$"))
    expect(page.locator("html")).to_have_attribute("data-tiles", "optimised")
    expect(optimised).to_be_visible()
    expect(grid).to_be_hidden()
    # (after the waits above: the swap is done) in the grid's space, so no card moves
    assert first.evaluate(placed) == before
    assert watched.load_every_image() > 0  # every optimised input drawn loads
    shown = page.locator(".optimised-space img")
    expect(shown.first).to_be_visible()
    assert shown.evaluate_all("els => els.every(e => e.naturalWidth > 0)")

    # the other controls still work, and keep the switch
    page.select_option("#sort", "peak")
    expect(page).to_have_url(re.compile(r"#(?=.*tiles=optimised)(?=.*sort=peak)"))
    expect(switch).to_be_checked()
    expect(optimised).to_be_visible()
    # a reload keeps it; the next layer's page opens with it
    page.reload()
    expect(switch).to_be_checked()
    watched.follow(page.locator('nav.pager a[rel="next"]').first)
    expect(page).to_have_url(re.compile(r"/layers/conv4\.html#tiles=optimised$"))
    expect(page.locator("html")).to_have_attribute("data-tiles", "optimised")
    expect(page.locator('input[name="tiles"]')).to_be_checked()
    expect(page.locator(".optimised-space").first).to_be_visible()
    # and a unit's page, whose links carry it back
    watched.follow(page.locator(".tile-link").first)
    expect(page).to_have_url(re.compile(r"/units/conv4/\d+\.html#tiles=optimised$"))
    expect(page.locator("nav.pager a", has_text="conv4: all units").first).to_have_attribute(
        "href", re.compile(r"#unit-\d+&tiles=optimised$"))

    # off again: the projections, and the address without the pair
    watched.open(url + "#tiles=optimised")
    switch = page.locator('input[name="tiles"]')
    expect(switch).to_be_checked()
    switch.uncheck()
    expect(page).to_have_url(url)
    expect(page.locator("html")).not_to_have_attribute("data-tiles", re.compile(".*"))
    expect(page.locator("ol.units > li:not(.dead)").first.locator(
        ".tile-grids > .cellgrid:not(.optimised-space)")).to_be_visible()
    assert watched.problems == []


def test_the_index_strips_show_optimised_inputs_with_the_switch(watched, atlas):
    page = watched.page
    watched.open((atlas / "index.html").as_uri())
    strip = page.locator(".strip-tiles .optimised-space").first
    expect(strip).to_be_hidden()
    page.locator('input[name="tiles"]').check()
    expect(strip).to_be_visible()
    expect(strip.locator("img")).to_have_js_property("complete", True)
    assert strip.locator("img").evaluate("e => e.naturalWidth") > 0
    assert watched.problems == []


def test_the_switch_is_hidden_without_javascript(browser, atlas):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto((atlas / "index.html").as_uri())
        assert page.locator(".optimised-switch").count() == 1
        expect(page.locator(".optimised-switch")).to_be_hidden()
        expect(page.locator(".strip-tiles .cellgrid:not(.optimised-space)").first).to_be_visible()
    finally:
        context.close()


def test_a_unit_not_driven_is_said_in_words_and_not_drawn(watch, small):
    watched = watch(small.as_uri())
    page = watched.page
    watched.open((small / "units" / "conv2" / "1.html").as_uri())
    mean = page.locator(".optimised-mean")
    expect(mean.locator(".not-driven")).to_be_visible()
    expect(mean.locator(".not-driven")).to_contain_text("Not driven")
    expect(mean.locator("img")).to_have_count(0)
    expect(page.locator(".optimised-centre img")).to_be_visible()
    expect(page.locator(".optimised-centre .reach")).to_contain_text(
        "did not reach the unit's range")
    # the tiles: in words too, and a unit the store does not hold says so
    watched.open((small / "layers" / "conv2.html").as_uri() + "#tiles=optimised")
    # the tile shows the receptive field's input, the one its optimisation drove
    expect(page.locator("#unit-1 .optimised-space img")).to_have_attribute(
        "src", re.compile(r"0001-optimised-centre\.png$"))
    expect(page.locator("#unit-3 .optimised-space")).to_have_text("not optimised")
    expect(page.locator("#unit-0 .optimised-space img")).to_be_visible()
    assert watched.problems == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_panel_and_tiles_read_on_a_phone_in_both_themes(watch, atlas, small, scheme):
    rows = []
    for folder, name in ((atlas, f"units/{LAYER}/{_driven_unit(atlas, LAYER)[0]}.html"),
                         (atlas, f"layers/{LAYER}.html#tiles=optimised"),
                         (small, "units/conv2/1.html"),
                         (small, "layers/conv2.html#tiles=optimised")):
        watched = watch(folder.as_uri(), color_scheme=scheme, **PHONE)
        page = watched.page
        watched.open(folder.as_uri() + "/" + name)
        watched.load_every_image()
        _no_sideways_scroll(page)
        if name.startswith("units"):
            panel = page.locator("section.optimised")
            expect(panel).to_be_visible()
            # on a phone each card takes the width: the pictures stay within the screen
            for card in panel.locator("ol > li").all():
                box = card.bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        else:
            expect(page.locator(".optimised-space").first).to_be_visible()
        page.evaluate("window.scrollTo(0, 0)")  # what is scrolled past is not measured
        measured = page.evaluate(CONTRAST)
        rows += [(r["ratio"], name, r["what"]) for r in measured]
        assert watched.problems == []
    whats = " ".join(r[2] for r in rows)
    for must in ("not-driven", "reach", "optimised-none"):
        assert must in whats, must  # measured, not skipped
    worst = min(rows)
    assert worst[0] >= 4.5, worst

"""Tips and search thumbnails in a real headless Chromium, on a small atlas built here with real
patches-grid files: what hover shows, focus and a tap show too; a class search shows each
unit's first patch, cropped from its grid; from file:// and under a URL prefix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from support import served_copy

from pipeline.atlas import AtlasContext, LayerEntry, UnitEntry, write_atlas

CELL_W, CELL_H, SHEET_W, SHEET_H = 10, 12, 34, 40  # a 3 x 3 grid, 2 px apart
RANK1 = (220, 30, 30)  # the first cell's colour; every other pixel is blue


def _patches(out: Path, label: str, unit: int) -> str:
    path = f"tiles/{label}/{unit:04d}-patches.jpg"
    pixels = np.zeros((SHEET_H, SHEET_W, 3), np.uint8)
    pixels[...] = (30, 60, 220)
    pixels[:CELL_H, :CELL_W] = RANK1
    (out / path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(out / path, quality=95)
    return path


def _context(out: Path) -> AtlasContext:
    def unit(label: str, number: int, share: float, named: bool) -> UnitEntry:
        count = round(100 * share)
        return UnitEntry(number, False, 2.0 + number, "goldfish", 9, _patches(out, label, number),
                         top_class_share=share, n_selectivity=100,
                         classes=((1, "goldfish", count), (0, "tabby cat", 100 - count)),
                         named_class="goldfish" if named else None)

    layers = tuple(
        LayerEntry(label=label, module=f"features.{i}", out_shape=(3, 8, 8),
                   receptive_field=5 + 6 * i, preview=None, patch_cell=(CELL_W, CELL_H, SHEET_W,
                                                                        SHEET_H),
                   units=(unit(label, 0, 0.9, True), unit(label, 1, 0.3, False),
                          UnitEntry(2, True, 0.0, None, 0, None)))
        for i, label in enumerate(("conv1", "conv2")))
    return AtlasContext(title="Tips", workflow="tips", model_name="Net", dataset_name="Tiny",
                        n_images=100, n_classes=2, top1=0.5, top5=1.0, val_accuracy=None,
                        layers=layers, filters_image=None, generated="2024-06-01",
                        version="0.1.0", method="deconvnet", top_k=9,
                        class_names=("tabby cat", "goldfish"))


@pytest.fixture(scope="module")
def small_atlas(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tips_atlas")
    write_atlas(_context(out), out)
    return out


@pytest.fixture(scope="module")
def small_served(small_atlas, tmp_path_factory):
    with served_copy(small_atlas, tmp_path_factory.mktemp("www"), "lab/atlas") as url:
        yield url


@pytest.fixture(params=["file", "prefix"])
def base(request, small_atlas) -> str:
    if request.param == "file":
        return small_atlas.as_uri() + "/"
    return request.getfixturevalue("small_served")


MIXED = "mixed: no class has a clear majority of its top images; most frequent: goldfish, 30 %"


def test_hover_focus_and_tap_show_the_mixed_explanation(watch, base):
    watched = watch(base, has_touch=True)
    page = watched.page
    watched.open(base + "layers/conv2.html")
    mixed = page.locator("#unit-1 .top-class")
    tip = page.locator("#atlas-tip")
    expect(mixed).to_have_text("mixed")

    mixed.hover()
    expect(tip).to_be_visible()
    expect(tip).to_have_text(MIXED + " of 100 top images")
    expect(tip).to_have_attribute("role", "tooltip")
    expect(mixed).to_have_attribute("aria-describedby", "atlas-tip")
    page.mouse.move(1, 890)
    expect(tip).to_be_hidden()

    # keyboard: Tab from the unit's link reaches it (past the card's tile link)
    page.locator("#unit-1 .unit-id").focus()
    for _ in range(6):
        page.keyboard.press("Tab")
        if mixed.evaluate("el => el === document.activeElement"):
            break
    expect(mixed).to_be_focused()
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("most frequent: goldfish")
    page.keyboard.press("Escape")
    expect(tip).to_be_hidden()

    # a tap shows it and leaves it shown; a tap elsewhere hides it
    page.locator("h1").tap()
    mixed.tap()
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("most frequent: goldfish")
    page.wait_for_timeout(300)  # it stays: no hover to lose
    expect(tip).to_be_visible()
    page.locator("h1").tap()
    expect(tip).to_be_hidden()
    # a second tap on the same element toggles it off
    mixed.tap()
    expect(tip).to_be_visible()
    mixed.tap()
    expect(tip).to_be_hidden()
    assert watched.problems == [] and watched.blocked == []


def test_a_class_search_shows_each_units_first_patch(watch, base):
    watched = watch(base)
    page = watched.page
    watched.open(base + "index.html")
    page.locator("#search").fill("goldfish")
    results = page.locator("#search-results a")
    expect(results).to_have_count(2)  # unit 0 of both layers: mostly goldfish
    thumbs = page.locator("#search-results .search-thumb img")
    expect(thumbs).to_have_count(2)
    first = thumbs.first
    expect(first).to_be_visible()
    expect(first).to_have_attribute("src", "tiles/conv1/0000-patches.jpg")
    page.wait_for_function("[...document.querySelectorAll('#search-results img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    box = page.locator("#search-results .search-thumb").first.bounding_box()
    scale = 32 / max(CELL_W, CELL_H)
    assert (round(box["width"]), round(box["height"])) == (round(CELL_W * scale), 32)
    drawn = first.bounding_box()
    assert drawn["width"] == pytest.approx(SHEET_W * scale, abs=0.5)
    assert (drawn["x"], drawn["y"]) == pytest.approx((box["x"], box["y"]), abs=0.5)
    # what shows is the rank-1 cell (red), not the rest of the grid (blue)
    shot = page.locator("#search-results .search-thumb").first.screenshot()
    import io

    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    inner = pixels[3:-3, 3:-3].reshape(-1, 3).mean(axis=0)
    assert inner[0] > 150 and inner[2] < 100, inner
    # a unit search shows the thumbnail too; a dead unit has none
    page.locator("#search").fill("conv2/1")
    expect(page.locator("#search-results .search-thumb img")).to_have_attribute(
        "src", "tiles/conv2/0001-patches.jpg")
    page.locator("#search").fill("conv2/2")
    expect(page.locator("#search-results a")).to_have_count(1)
    expect(page.locator("#search-results .search-thumb")).to_have_count(0)
    assert watched.problems == [] and watched.blocked == []

"""Figure 4 in the tiny demo's atlas: the evolution pages and a unit's strip load from file://
without errors, every picture shows, each cell is the unit's own projection at that snapshot,
the index and layer pages link to them, and a phone needs no horizontal scroll."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image
from playwright.sync_api import expect

from pipeline.atlas.gather import shown_projections
from pipeline.atlas.render import format_number


@pytest.fixture(scope="module")
def evolution(tiny_run) -> zarr.Group:
    return zarr.open_group(tiny_run / "runs" / "tiny" / "evolution.zarr", mode="r")


def _check_loads(watched, url: str) -> int:
    watched.open(url)
    images = watched.load_every_image()
    assert not watched.problems, watched.problems
    assert not watched.blocked, watched.blocked
    return images


def test_every_evolution_page_loads_with_a_row_per_unit_and_a_column_per_snapshot(
        watched, atlas, evolution):
    snapshots = list(evolution.attrs["snapshots"])
    assert snapshots == ["epoch 1", "epoch 2"]  # TINY_DEMO's [train] snapshot_epochs
    for label in evolution.attrs["layers"]:
        _check_loads(watched, (atlas / "evolution" / f"{label}.html").as_uri())
        page = watched.page
        units = evolution[label]["value"].shape[1]
        live = int((evolution[label]["image_id"][:] >= 0).sum())
        # each live cell once (its other display curve's picture is not drawn)
        assert page.locator(".evolution-table img.curve-linear").count() == live > 0
        headers = page.locator(".evolution-table thead th").all_inner_texts()
        assert headers == ["unit", *snapshots]
        assert page.locator(".evolution-table tbody tr").count() == units
        assert page.locator(".evolution-table tbody td").count() == units * len(snapshots)
        assert page.locator(".evolution-silent").count() == units * len(snapshots) - live
        # the unit number leads to its page
        watched.follow(page.locator(".evolution-table tbody th a").first)
        page.wait_for_load_state("load")
        expect(page).to_have_url(re.compile(rf"/units/{label}/0\.html$"))


def test_a_unit_page_shows_its_strip_and_links_the_layers_page(watched, atlas, evolution):
    images = _check_loads(watched, (atlas / "units" / "conv3" / "5.html").as_uri())
    page = watched.page
    assert images > 0
    cells = page.locator(".evolution-strip li")
    assert cells.count() == 2
    assert page.locator(".evolution-strip .snapshot-label").all_inner_texts() == [
        "epoch 1", "epoch 2"]
    shown = page.locator(".evolution-strip .pcell img.curve-linear")
    live = int((evolution["conv3"]["image_id"][:, 5] >= 0).sum())
    assert shown.count() == live
    for i in range(shown.count()):
        assert shown.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    watched.follow(page.locator(".evolution-section a", has_text="All of conv3"))
    page.wait_for_load_state("load")
    expect(page).to_have_url(re.compile(r"/evolution/conv3\.html$"))


def test_the_index_and_layer_pages_link_to_the_evolution_pages(watched, atlas):
    _check_loads(watched, (atlas / "index.html").as_uri())
    card = watched.page.locator(".experiment", has_text="Feature evolution (Figure 4)")
    assert card.count() == 1
    assert card.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    watched.follow(card.locator("a"))
    watched.page.wait_for_load_state("load")
    expect(watched.page).to_have_url(re.compile(r"/evolution/conv1\.html$"))
    _check_loads(watched, (atlas / "layers" / "conv4.html").as_uri())
    watched.follow(watched.page.locator(".see-also a"))
    watched.page.wait_for_load_state("load")
    expect(watched.page).to_have_url(re.compile(r"/evolution/conv4\.html$"))


def test_each_cell_shows_that_units_projection_at_that_snapshot(atlas, evolution):
    """Read the crop each cell places (its CSS) and compare those sheet pixels with the stored
    projection shown as the atlas shows projections."""
    html = (atlas / "evolution" / "conv2.html").read_text(encoding="utf-8")
    crop = re.compile(r'<tr id="unit-(\d+)">(.*?)</tr>', re.S)
    cell = re.compile(r'<td[^>]*><span class="pcell[^"]*" style="--w:(\d+);--h:(\d+);--sw:\d+;'
                      r'--sh:\d+;--k:\d+;--x:(\d+);--y:(\d+)"><img class="curve-linear" '
                      r'src="([^"]+)"[^>]*><img class="curve-lifted"[^>]*></span>'
                      r'<span class="muted evolution-value">([^<]+)</span></td>'
                      r'|<td[^>]*><span class="evolution-silent"')
    group = evolution["conv2"]
    checked = 0
    for unit_text, row in crop.findall(html):
        unit = int(unit_text)
        for s, found in enumerate(cell.finditer(row)):
            if found.group(1) is None:
                assert group["image_id"][s, unit] == -1
                continue
            w, h, x, y = (int(found.group(i)) for i in range(1, 5))
            src = found.group(5)
            sheet = np.asarray(Image.open((atlas / "evolution" / src).resolve()).convert("RGB"))
            shown = sheet[y:y + h, x:x + w].astype(int)
            stored = group["projections"][s, unit].astype(np.float32)
            expected = shown_projections(stored[None], "linear")[0].astype(int)  # lossless
            assert found.group(6) == format_number(float(group["value"][s, unit]))
            assert np.array_equal(shown, expected), (unit, s)
            checked += 1
    assert checked >= 32


@pytest.mark.parametrize("page", ["evolution/conv1.html", "evolution/conv5.html",
                                  "units/conv5/3.html"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_horizontal_scroll_on_a_phone(watch, atlas: Path, page, scheme):
    phone = watch(atlas.as_uri(), viewport={"width": 390, "height": 844}, color_scheme=scheme)
    _check_loads(phone, (atlas / page).as_uri())
    width = phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width


def test_the_evolution_pages_work_under_a_url_prefix(watch, served):
    page = watch(served)
    _check_loads(page, served + "evolution/conv2.html")
    page.follow(page.page.locator(".evolution-layers a", has_text="conv3"))
    page.page.wait_for_load_state("load")
    expect(page.page).to_have_url(served + "evolution/conv3.html")
    page.load_every_image()
    assert not page.problems and not page.blocked

"""The reader's display choices, and pictures drawn exactly: the curve and the scale change the
pixels drawn, live in the address and follow the reader to the next page; every projection is
drawn pixel for pixel at a whole factor, equal (to 8-bit rounding) to the stored float16
projection through the documented curve (pipeline.interp.display)."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image
from playwright.sync_api import expect

from pipeline.atlas.tiles import GUTTER, grid_side

pytestmark = pytest.mark.slow

CELL = ".tile-grids .pcell"


def _second_layer(atlas: Path) -> str:
    """The first layer whose tiles show projections (layer 1 shows filters)."""
    store = zarr.open_group(atlas.parent.parent / "runs" / "tiny" / "projections.zarr", mode="r")
    layers = pd.read_parquet(atlas.parent.parent / "runs" / "tiny" / "units.parquet")["layer"]
    return [label for label in dict.fromkeys(layers) if label in store][1]


def _drawn(locator) -> np.ndarray:
    """What the browser drew for an element, as uint8 RGB (device pixels = CSS pixels). The
    layout may place it at a fractional position (text lines are 25.6 px); the browser draws it
    from the nearest pixel, so the clip is rounded, not widened as an element screenshot is."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    clip = {key: round(box[key]) for key in ("x", "y", "width", "height")}
    return np.asarray(Image.open(io.BytesIO(locator.page.screenshot(clip=clip))).convert("RGB"))


def _exact(values: np.ndarray, gamma: float, ratio: float = 1.0, factor: int = 1) -> np.ndarray:
    """The documented curve, written out here on its own: a projection binned by ``factor``,
    v = clip(p / s, -1, 1) with s the 99th percentile of |p| (its largest |p| when that is 0),
    m a pixel's largest |v|, shown = 128 + ratio * 127 * v * m ** (gamma - 1). Float, before
    rounding."""
    p = _binned(values.astype(np.float64), factor)
    scale = np.percentile(np.abs(p), 99) or np.abs(p).max()
    v = np.clip(p / scale, -1, 1)
    m = np.abs(v).max(axis=-1, keepdims=True)
    lift = np.divide(m ** gamma, m, out=np.zeros_like(m), where=m > 0)
    return 128 + ratio * 127 * v * lift


def _binned(values: np.ndarray, factor: int) -> np.ndarray:
    """Each ``factor`` x ``factor`` block averaged (a block cut by the edge: over the pixels it
    has): the layer page says which factor (``data-binning``)."""
    if factor == 1:
        return values
    h, w = (math.ceil(n / factor) * factor for n in values.shape[:2])
    padded = np.zeros((h, w, values.shape[2]))
    padded[:values.shape[0], :values.shape[1]] = values
    count = np.zeros((h, w))
    count[:values.shape[0], :values.shape[1]] = 1
    blocks = padded.reshape(h // factor, factor, w // factor, factor, -1).sum(axis=(1, 3))
    return blocks / count.reshape(h // factor, factor, w // factor, factor).sum(axis=(1, 3))[
        ..., None]


def _binning(atlas: Path, label: str) -> int:
    """The whole factor the layer's projections are binned by, as its page says."""
    page = (atlas / "layers" / f"{label}.html").read_text(encoding="utf-8")
    return int(re.search(r'data-binning="(\d+)"', page).group(1))


def _stored(atlas: Path, label: str, unit: int, rank: int) -> np.ndarray:
    group = zarr.open_group(atlas.parent.parent / "runs" / "tiny" / "projections.zarr",
                            mode="r")[label]
    return np.asarray(group["projections"][0, unit, rank], np.float32)


def _grey(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def test_tile_files_hold_the_float16_projection_through_either_curve(atlas):
    label = _second_layer(atlas)
    units = pd.read_parquet(atlas.parent.parent / "runs" / "tiny" / "units.parquet")
    live = units[(units["layer"] == label) & ~units["dead"] & (units["n_top"] >= 9)]
    unit = int(live["unit"].iloc[0])
    for curve, gamma in (("linear", 1.0), ("lifted", 0.5)):
        path = atlas / "tiles" / label / f"{unit:04d}-deconvnet-{curve}.webp"
        sheet = np.asarray(Image.open(path).convert("RGB"), np.float64)
        for rank in range(9):
            exact = _exact(_stored(atlas, label, unit, rank), gamma,
                           factor=_binning(atlas, label))
            h, w = exact.shape[:2]
            r, c = divmod(rank, grid_side(9))
            y, x = r * (h + GUTTER), c * (w + GUTTER)
            cell = sheet[y:y + h, x:x + w]
            if exact.shape[-1] == 1:
                exact = exact.repeat(3, axis=-1)
            assert np.abs(cell - exact).max() <= 0.5 + 1e-6, (curve, rank)  # 8-bit rounding


@pytest.mark.parametrize("where", ["file", "prefix"])
def test_curve_and_scale_change_the_drawn_pixels_persist_and_carry(watch, atlas, served, where):
    label = _second_layer(atlas)
    root = atlas.as_uri() + "/" if where == "file" else served
    watched = watch(atlas.as_uri() if where == "file" else served)
    page = watched.page
    watched.open(root + f"layers/{label}.html")
    cell = page.locator(CELL).first
    cell.scroll_into_view_if_needed()
    expect(cell.locator("img.curve-linear")).to_be_visible()
    page.wait_for_function(
        "[...document.images].filter(i => i.closest('.pcell') && i.offsetParent)"
        ".slice(0, 9).every(i => i.complete && i.naturalWidth > 0)")
    linear = _drawn(cell)
    page.get_by_label("lifted").check()
    expect(page.locator("html")).to_have_attribute("data-curve", "lifted")
    expect(page).to_have_url(re.compile(r"#.*curve=lifted"))
    expect(cell.locator("img.curve-lifted")).to_be_visible()
    page.wait_for_function(
        "(() => { const i = document.querySelector('.tile-grids .pcell img.curve-lifted');"
        " return i.complete && i.naturalWidth > 0; })()")
    lifted = _drawn(cell)
    assert lifted.shape == linear.shape and not np.array_equal(lifted, linear)
    page.get_by_label("one scale per layer").check()
    expect(page.locator("html")).to_have_attribute("data-scale", "common")
    expect(page).to_have_url(re.compile(r"#.*scale=common"))
    watched.until(lambda: not np.array_equal(_drawn(cell), lifted))
    common = _drawn(cell)
    assert not np.array_equal(common, lifted)
    # closer to mid-grey on the common scale, never further
    assert np.abs(common.astype(int) - 128).sum() < np.abs(lifted.astype(int) - 128).sum()
    # the choices survive a reload, and follow the reader to a unit page and to the next one
    page.reload()
    expect(page.locator("input[name=curve][value=lifted]")).to_be_checked()
    expect(page.locator("input[name=scale][value=common]")).to_be_checked()
    watched.follow(page.locator(".tile-link").first)
    expect(page).to_have_url(re.compile(r"/units/.*#(?=.*curve=lifted)(?=.*scale=common)"))
    expect(page.locator("html")).to_have_attribute("data-curve", "lifted")
    expect(page.locator("input[name=scale][value=common]")).to_be_checked()
    watched.follow(page.locator('a[rel="next"]').first)
    expect(page).to_have_url(re.compile(r"#.*curve=lifted"))
    expect(page.locator("html")).to_have_attribute("data-scale", "common")
    assert not watched.problems


# The common scale is a CSS contrast() filter on the own-scale picture (pivot 127.5, not 128:
# half a level at most) rounded once by the browser: within 1/255 of the float value, as the
# own scale's file is within 0.5/255 (measured on the demo, 108 cells of conv2 and of conv5:
# 0.5 and 1.0 exactly).
@pytest.mark.parametrize("scale, tolerance", [("own", 1.0), ("common", 1.0)])
def test_drawn_projection_equals_the_stored_one_through_the_curve(watch, atlas, scale,
                                                                    tolerance):
    """What the page draws, read back from the screen, for both curves on one scale."""
    label = _second_layer(atlas)
    run = atlas.parent.parent / "runs" / "tiny"
    units = pd.read_parquet(run / "units.parquet")
    live = units[(units["layer"] == label) & ~units["dead"] & (units["n_top"] > 0)]
    store = zarr.open_group(run / "projections.zarr", mode="r")[label]
    factor = _binning(atlas, label)
    # each shown projection's own scale (of its binned values, as drawn)
    own = {}
    for unit, shown in zip(live["unit"], live["n_top"], strict=True):
        for rank in range(min(int(shown), 9)):
            p = _binned(np.asarray(store["projections"][0, unit, rank], np.float64), factor)
            s = np.percentile(np.abs(p), 99) or np.abs(p).max()
            own[(int(unit), rank)] = s * float(store["projection_scale"][0, unit, rank])
    # the layer's common scale: the 99th percentile of its projections' own scales
    layer_scale = np.percentile(list(own.values()), 99)
    unit = int(live["unit"].iloc[0])
    watched = watch(atlas.as_uri())
    page = watched.page
    for curve, gamma in (("linear", 1.0), ("lifted", 0.5)):
        watched.open(atlas.as_uri() + f"/layers/{label}.html#curve={curve}&scale={scale}")
        card = page.locator(f"#unit-{unit}")
        card.scroll_into_view_if_needed()
        page.wait_for_function(
            f"[...document.querySelectorAll('#unit-{unit} .pcell img.curve-{curve}')]"
            ".every(i => i.complete && i.naturalWidth > 0)")
        for rank in range(min(int(live["n_top"].iloc[0]), 9)):
            cell = card.locator(".pcell").nth(rank)
            k = int(cell.evaluate("e => getComputedStyle(e).getPropertyValue('--k')"))
            w, h = (int(cell.evaluate(f"e => +getComputedStyle(e).getPropertyValue('--{n}')"))
                    for n in ("w", "h"))
            drawn = _drawn(cell)[:h * k:k, :w * k:k].astype(np.float64)
            ratio = 1.0
            if scale == "common":
                ratio = min(1.0, own[(unit, rank)] / layer_scale) ** gamma
                ratio = math.floor(ratio * 255 + 1e-9) / 255
            exact = _exact(_stored(atlas, label, unit, rank), gamma, ratio, factor)
            if exact.shape[-1] == 1:
                exact = exact.repeat(3, axis=-1)
            assert drawn.shape == exact.shape, (drawn.shape, exact.shape)
            error = np.abs(drawn - exact).max()
            assert error <= tolerance + 1e-6, (curve, scale, rank, error)
    assert not watched.problems


def test_tiles_and_zoom_are_whole_factor_nearest_neighbour(watch, atlas):
    """Measured on what is drawn: every stored pixel becomes a k x k square of its value."""
    label = _second_layer(atlas)
    units = pd.read_parquet(atlas.parent.parent / "runs" / "tiny" / "units.parquet")
    unit = int(units[(units["layer"] == label) & ~units["dead"]]["unit"].iloc[0])
    sheet = np.asarray(Image.open(atlas / "tiles" / label / f"{unit:04d}-deconvnet-linear.webp")
                       .convert("RGB"))
    watched = watch(atlas.as_uri())
    page = watched.page

    def check(cell) -> int:
        k = int(cell.evaluate("e => +getComputedStyle(e).getPropertyValue('--k')"))
        x, y, w, h = (int(cell.evaluate(f"e => +getComputedStyle(e).getPropertyValue('--{n}')"))
                      for n in ("x", "y", "w", "h"))
        expected = sheet[y:y + h, x:x + w].repeat(k, axis=0).repeat(k, axis=1)
        assert np.array_equal(_drawn(cell), expected)
        return k

    watched.open(atlas.as_uri() + f"/layers/{label}.html")
    cell = page.locator(f"#unit-{unit} .pcell").first
    cell.scroll_into_view_if_needed()
    page.wait_for_function(
        f"[...document.querySelectorAll('#unit-{unit} .pcell img.curve-linear')]"
        ".every(i => i.complete && i.naturalWidth > 0)")
    assert check(cell) >= 1
    watched.open(atlas.as_uri() + f"/units/{label}/{unit}.html")
    first = page.locator(".trio > .pcell").first
    first.scroll_into_view_if_needed()
    page.wait_for_function("[...document.querySelectorAll('.trio > .pcell img.curve-linear')]"
                           ".filter(i => i.getClientRects().length)"  # the method shown
                           ".every(i => i.complete && i.naturalWidth > 0)")
    page_k = check(first)
    first.click()
    zoomed = page.locator(".zoom .pcell")
    expect(zoomed).to_be_visible()
    assert check(zoomed) >= page_k
    assert not watched.problems

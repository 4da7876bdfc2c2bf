"""Write the static HTML atlas from a gathered :class:`AtlasContext`.

Output (all links relative, so the folder works from ``file://``, can be moved, zipped or
served from any sub-path; nothing is fetched from outside it, and no fetch/XHR at all)::

    index.html                  model, data and run cards, one entry per layer, first-layer filters
    layers/<label>.html         every unit of one layer as a Figure 2 tile; sort, hide dead units
    units/<label>/<unit>.html   one unit: its top images large, statistics, charts (permalink)
    assets/style.css, atlas.js  copied from the package (search, sorting, keyboard navigation)
    assets/search-index.js      the search index, as a script
    data/<label>.csv, atlas.json  the unit tables and the whole atlas (pipeline.atlas.export)

The caller writes the images first; this module only links them, and refuses to link a file
that is missing, because a broken atlas is found by a reader, not by the pipeline. The layer and
unit pages (a thousand and more) can be written by worker processes, each with its own template
environment and one copy of the context (:class:`pipeline.atlas.parallel.Workers`).
"""

import functools
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from PIL import Image

from pipeline.atlas.charts import class_chart, histogram_chart
from pipeline.atlas.context import AtlasContext, LayerEntry, UnitEntry
from pipeline.atlas.export import write_exports
from pipeline.atlas.navigation import SEARCH_PAGE_FIELDS, search_pages
from pipeline.atlas.parallel import Workers
from pipeline.atlas.site_paths import ASSETS_DIR, LAYERS_DIR, UNITS_DIR, unit_path
from pipeline.atomic import write_bytes

# A layer label becomes a file name: keep it to characters that need no quoting anywhere.
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Images (not projections, which are drawn by whole factors) at most this wide are shown with
# nearest-neighbour scaling: a browser only enlarges them; wider ones get shrunk, where
# nearest-neighbour would alias and smoothing looks better.
CRISP_MAX_WIDTH = 400
# Unit pages are written in runs of MIN_PAGE_RUN to MAX_PAGE_RUN pages, about four runs per
# worker (so that no worker is left with the last long run); a run is one task of a worker, and
# a run of one page would cost more in messages than in rendering.
MIN_PAGE_RUN, MAX_PAGE_RUN = 8, 64


@functools.cache
def environment() -> Environment:
    """The template environment: autoescaped, strict about undefined names."""
    env = Environment(
        loader=PackageLoader("pipeline", "atlas/templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pct"] = format_percent
    env.filters["num"] = format_number
    env.filters["pct_level"] = format_level
    return env


def format_percent(value: float | None) -> str:
    """Accuracy as a percentage; a value above 1 is taken as already in percent."""
    if value is None:
        return "—"
    return f"{value * 100 if value <= 1 else value:.1f} %"


def format_level(digits: str) -> str:
    """Quantile column digits as a label: ``"99"`` -> ``"99th percentile"``, ``"999"`` -> 99.9."""
    level = float("0." + digits) * 100
    return f"{level:g}th percentile"


def format_number(value: float) -> str:
    """Activation values with about three significant digits, never in e-notation for >= 1."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _check_labels(layers: tuple[LayerEntry, ...]) -> None:
    seen: set[str] = set()
    for layer in layers:
        if not _LABEL.fullmatch(layer.label):
            raise ValueError(
                f"layer label {layer.label!r} is used as a file name: use letters, digits, . _ -"
            )
        if layer.label in seen:
            raise ValueError(f"layer label {layer.label!r} appears twice; labels must be unique")
        seen.add(layer.label)


def _image_paths(context: AtlasContext) -> list[str]:
    paths = [context.filters_image] if context.filters_image else []
    paths.extend(link.image for link in context.experiments if link.image)
    for layer in context.layers:
        if layer.preview:
            paths.append(layer.preview)
        paths.extend(cell.image for cell in layer.filter_cells)
        for unit in layer.units:
            if unit.tile and not unit.dead:
                paths.append(unit.tile)
            if unit.filter:
                paths.append(unit.filter.image)
            for image in unit.top_images:
                crops = (image.patch, image.thumb, image.heat)
                paths.extend(crop.image for crop in crops if crop is not None)
                paths.extend(crop.image for cell in image.projections
                             for crop in (cell.linear, cell.lifted))
            paths.extend(cell.projection.image for cell in unit.evolution if cell.projection)
            paths.extend(image.picture.image for image in unit.optimised if image.picture)
    return paths


class ImageSizes(dict):
    """Width and height of linked images (header only), so pages reserve their space; an image
    not yet measured is measured when a page first links it."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        self.out_dir = out_dir

    def __missing__(self, path: str) -> tuple[int, int]:
        self.check([path])
        return self[path]

    def check(self, paths: list[str]) -> None:
        """Measure ``paths``; refuse a path that is not relative and POSIX, and list every
        missing file at once."""
        missing: list[str] = []
        for path in paths:
            if path in self:
                continue
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts or "\\" in path or ":" in path:
                raise ValueError(f"image path {path!r} must be relative to the atlas root "
                                 "(POSIX)")
            file = self.out_dir / pure
            if not file.is_file():
                missing.append(path)
                continue
            with Image.open(file) as image:
                self[path] = image.size
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            shown = ", ".join(missing[:3]) + more
            raise FileNotFoundError(f"atlas images missing under {self.out_dir}: {shown}")


def _image_sizes(context: AtlasContext, out_dir: Path) -> ImageSizes:
    """Width and height of every image the main pages link, checked before any is written."""
    sizes = ImageSizes(out_dir)
    sizes.check(_image_paths(context))
    return sizes


def _copy_assets(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in resources.files("pipeline.atlas").joinpath("static").iterdir():
        if item.is_file() and not item.name.startswith("."):
            with resources.as_file(item) as source:
                shutil.copyfile(source, target / item.name)


_INDENT = re.compile(r"\n[ \t]+")


def _compact(html: str) -> str:
    """Drop the templates' indentation (pages have no <pre> or <textarea>): with a thousand
    unit pages it is megabytes of a shared atlas."""
    return _INDENT.sub("\n", html)


def _write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _page_helpers(root: str, sizes: ImageSizes) -> dict[str, Callable]:
    """Link builders for a page ``root`` ("", "../" or "../../") away from the atlas root."""

    def href(path: str) -> str:
        return root + quote(path)

    def layer_href(layer: LayerEntry) -> str:
        return f"{root}{LAYERS_DIR}/{quote(layer.label)}.html"

    def unit_href(layer: LayerEntry, unit: UnitEntry) -> str:
        return root + quote(unit_path(layer.label, unit.unit))

    def size(path: str) -> tuple[int, int]:
        return sizes[path]

    return {"href": href, "layer_href": layer_href, "unit_href": unit_href, "size": size,
            "box_style": box_style}


def box_style(box: tuple[float, ...]) -> str:
    """CSS placing a (top, left, bottom, right) box given as fractions of the image side."""
    top, left, bottom, right = (100 * v for v in box)
    return (f"top:{top:.2f}%;left:{left:.2f}%;height:{bottom - top:.2f}%;"
            f"width:{right - left:.2f}%")


def _widest_tile(layer: LayerEntry, sizes: dict[str, tuple[int, int]]) -> int:
    """CSS width of the layer's tiles (0 if none): two grids (projections, patches) at the
    layer's whole factor, GAP apart; its cards are sized to fit it."""
    widest = max((sizes[u.tile][0] for u in layer.units if u.tile and not u.dead), default=0)
    return 2 * widest * layer.tile_factor + TILE_GAP if widest else 0


TILE_GAP = 10  # CSS px between a tile's projection grid and its patch grid (style.css .tile)


#: The fields of each unit's row in the search index, in order (a row is a list, so that the
#: index of a large network stays small). atlas.js names them the same (its ``UNIT``), which
#: ``tests/atlas/test_search_index.py`` holds equal.
SEARCH_UNIT_FIELDS = ("layer", "unit", "top_class", "top_share", "dead", "n_selectivity",
                      "class_counts")


def search_index(context: AtlasContext) -> str:
    """The search index as a JS file that sets ``window.ATLAS_INDEX`` (a script, not fetched
    JSON, so it loads from ``file://``). ``<``, ``>`` and ``&`` are written as JSON escapes, so
    no class name can close the script."""
    labels = [layer.label for layer in context.layers]
    units = []
    for number, layer in enumerate(context.layers):
        for unit in layer.units:
            counts = [value for index, _, count in unit.classes for value in (index, count)]
            row = {"layer": number, "unit": unit.unit,
                   "top_class": unit.classes[0][0] if unit.classes else -1,  # most frequent
                   "top_share": round(unit.top_class_share, 3), "dead": int(unit.dead),
                   "n_selectivity": unit.n_selectivity, "class_counts": counts}
            units.append([row[field] for field in SEARCH_UNIT_FIELDS])
    data = {"layers": labels, "sizes": [layer.n_units for layer in context.layers],
            "classes": list(context.class_names), "groups": context.class_groups,
            "units": units, "pages": search_pages(context),
            # per layer (cell_w, cell_h, sheet_w, sheet_h) of its patches grids: a unit's
            # result shows the first cell of tiles/<label>/<unit:04d>-patches.jpg
            "cells": [list(layer.patch_cell) for layer in context.layers]}
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"window.ATLAS_INDEX = {text};\n"


def read_search_index(path: Path) -> dict[str, Any]:
    """The search index an atlas holds (``assets/search-index.js``), its unit rows as dicts
    keyed by :data:`SEARCH_UNIT_FIELDS`."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text[text.index("=") + 1:].strip().rstrip(";"))
    data["units"] = [dict(zip(SEARCH_UNIT_FIELDS, row, strict=True)) for row in data["units"]]
    data["pages"] = [dict(zip(SEARCH_PAGE_FIELDS, row, strict=True)) for row in data["pages"]]
    return data


def write_page(out_dir: Path, path: str, template: str, context: AtlasContext,
               **values) -> Path:
    """Render ``template`` to ``out_dir/path`` (POSIX, relative to the atlas root) with the
    atlas's header, footer and link helpers: the pages beyond Figure 2 use this. ``values``
    are the template's own variables; ``current``, ``prev_link`` and ``next_link`` default to
    None. The images it links must already be written."""
    depth = len(PurePosixPath(path).parts) - 1
    root = "../" * depth
    values = {"current": None, "prev_link": None, "next_link": None, "page_path": path,
              **values}
    page = environment().get_template(template).render(
        **_common(context), **_page_helpers(root, ImageSizes(Path(out_dir))), root=root,
        **values)
    target = Path(out_dir) / PurePosixPath(path)
    _write_text(target, _compact(page))
    return target


def write_atlas(context: AtlasContext, out_dir: Path, workers: Workers | None = None,
                advance: Callable[[int], None] | None = None) -> Path:
    """Render ``index.html``, one page per layer and per unit, the search index and the
    assets; return the index path. The layer and unit pages are written on ``workers`` (default:
    this process), in runs of pages; ``advance(n)`` is called as n more pages are written.

    Raises ``ValueError`` for a label that cannot be a file name or an image path that is not
    relative, and ``FileNotFoundError`` when a linked image has not been written yet.
    """
    out_dir = Path(out_dir)
    _check_labels(context.layers)
    sizes = _image_sizes(context, out_dir)
    _copy_assets(out_dir / ASSETS_DIR)
    _write_text(out_dir / ASSETS_DIR / "search-index.js", search_index(context))
    write_exports(context, out_dir)  # data/<label>.csv and data/atlas.json (atlas.export)
    index = out_dir / "index.html"
    page = environment().get_template("index.html").render(
        **_common(context), **_page_helpers("", sizes), root="", current=None, prev_link=None,
        next_link=None)
    _write_text(index, _compact(page))

    workers = workers or Workers(1)
    runs = [PageRun(LAYERS_DIR, i, i + 1) for i in range(len(context.layers))]
    pages = sum(layer.n_units for layer in context.layers)
    size = max(MIN_PAGE_RUN, min(MAX_PAGE_RUN, math.ceil(pages / (4 * workers.count))))
    runs += [PageRun(UNITS_DIR, start, min(start + size, pages))
             for start in range(0, pages, size)]

    def done(run: PageRun) -> None:
        if advance is not None:
            advance(run.stop - run.start)

    workers.map(_write_pages, runs, _Pages(context, sizes, out_dir), done)
    return index


@dataclass(frozen=True)
class PageRun:
    """A task of :func:`write_atlas`: the layer pages ``start`` to ``stop`` (excluded), or the
    unit pages ``start`` to ``stop`` of all units, layer after layer (``kind`` UNITS_DIR)."""

    kind: str
    start: int
    stop: int


@dataclass(frozen=True)
class _Pages:
    """What every page task reads: the whole context, and the linked images' sizes."""

    context: AtlasContext
    sizes: ImageSizes
    out_dir: Path


def _common(context: AtlasContext) -> dict:
    from pipeline.atlas.weak import RULE, WEAK_ACTIVE_SHARE, WEAK_PEAK_SHARE

    return {"ctx": context, "crisp_max_width": CRISP_MAX_WIDTH,
            "weak_active_share": WEAK_ACTIVE_SHARE, "weak_peak_share": WEAK_PEAK_SHARE,
            "weak_rule": RULE}


def _write_pages(pages: _Pages, run: PageRun) -> None:
    """One task of :func:`write_atlas`, in a worker: write a run of layer or unit pages."""
    if run.kind == LAYERS_DIR:
        for number in range(run.start, run.stop):
            _write_layer_page(pages, number)
        return
    sequence = [(layer, unit) for layer in pages.context.layers for unit in layer.units]
    for number in range(run.start, run.stop):
        _write_unit_page(pages, sequence, number)


def _write_layer_page(pages: _Pages, number: int) -> None:
    layers, sizes = pages.context.layers, pages.sizes
    layer = layers[number]
    helpers = _page_helpers("../", sizes)
    prev_layer = layers[number - 1] if number > 0 else None
    next_layer = layers[number + 1] if number + 1 < len(layers) else None
    page = environment().get_template("layer.html").render(
        **_common(pages.context), **helpers, root="../", current=layer,
        tile_width=_widest_tile(layer, sizes), prev_layer=prev_layer, next_layer=next_layer,
        prev_link=helpers["layer_href"](prev_layer) if prev_layer else None,
        next_link=helpers["layer_href"](next_layer) if next_layer else None,
    )
    _write_text(pages.out_dir / LAYERS_DIR / f"{layer.label}.html", _compact(page))


def _write_unit_page(pages: _Pages, sequence: list[tuple[LayerEntry, UnitEntry]],
                     number: int) -> None:
    """Unit page ``number`` of ``sequence`` (every unit, layer after layer), which its previous
    and next links follow across layers."""
    layer, unit = sequence[number]
    helpers = _page_helpers("../../", pages.sizes)
    before = sequence[number - 1] if number > 0 else None
    after = sequence[number + 1] if number + 1 < len(sequence) else None
    page = environment().get_template("unit.html").render(
        **_common(pages.context), **helpers, root="../../", current=layer, unit=unit,
        histogram=histogram_chart(unit.histogram, unit.n_zero),
        class_rows=class_chart(unit.classes, unit.n_selectivity),
        prev_unit=before, next_unit=after,
        prev_link=helpers["unit_href"](*before) if before else None,
        next_link=helpers["unit_href"](*after) if after else None,
    )
    _write_text(pages.out_dir / unit_path(layer.label, unit.unit), _compact(page))

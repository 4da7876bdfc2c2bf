"""The atlas's occlusion pages (Figure 7), from ``occlusion.zarr`` (see
``pipeline.experiments.occlusion_run``).

``occlusion/index.html`` shows every occluded image, each linking to ``occlusion/<id>.html``:
(a) the image, (b) the tracked feature map's total activation, (c) the deconvnet projection of
its peak, (d) P(true class) and (e) the most probable class, each map drawn over the image with
its colour bar or class legend, then the numbers. Pictures go to ``occlusion/<id>/``; the image
and the projection are drawn in the input's channels, of 4 channels 1-3 only (the maps and the
receptive field's box lie over them at the image's geometry; ``pipeline.atlas.channels``). Unit
pages of the tracked units link here (``PageExtras.unit_links``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atlas.channels import shown_rgb
from pipeline.atlas.context import AtlasContext, PageExtras, PageLink
from pipeline.atlas.gather import RunTables
from pipeline.atlas.occlusion_images import (
    CLASS_OPACITY,
    OVERLAY_OPACITY,
    card_image,
    class_colours,
    class_rgb,
    over_image,
    ramp_css,
    ramp_rgb,
)
from pipeline.atlas.render import format_number, unit_path, write_page
from pipeline.atlas.tiles import save_image
from pipeline.experiments.occlusion_run import OcclusionMeta
from pipeline.interp.display import CURVES, curve_display

OCCLUSION_DIR = "occlusion"
INDEX = f"{OCCLUSION_DIR}/index.html"


@dataclass(frozen=True)
class MapPanel:
    """One map of the figure, drawn over the image."""

    letter: str  # the paper's panel: "b", "d", "e"
    title: str
    image: str  # one pixel per occluder position, relative to the atlas root
    alt: str
    opacity: float = OVERLAY_OPACITY
    low: float = 0.0  # colour bar ends (continuous maps)
    high: float = 1.0
    marks: tuple[tuple[str, float, str], ...] = ()  # (what, value, as text) under the bar
    marked: float | None = None  # the value the colour bar marks: the unoccluded one


@dataclass(frozen=True)
class ClassEntry:
    """One row of the class map's legend."""

    name: str
    colour: str
    share: float  # of the occluder positions
    true: bool


@dataclass(frozen=True)
class OcclusionImage:
    """Everything one occlusion page shows."""

    image_id: int
    page: str
    file: str
    true_class: str
    predicted_class: str
    predicted_prob: float
    clean_prob: float
    lowest_prob: float
    lowest_at: tuple[int, int]  # (y, x) in input pixels of the square's centre
    layer: str
    unit: int
    unit_page: str
    peak: float
    position: tuple[int, int]
    clean_total: float
    input: str
    projection: str  # the linear curve's picture (lossless)
    projection_lifted: str  # the lifted curve's
    panels: tuple[MapPanel, ...]
    classes: tuple[ClassEntry, ...]
    rf_box: tuple[float, float, float, float]  # fractions of the image side
    map_box: tuple[float, float, float, float]

    @property
    def correct(self) -> bool:
        return self.predicted_class == self.true_class


def main_page(store_path: Path, context: AtlasContext) -> str:
    """The page the header links (``pipeline.atlas.navigation``): the list of the images."""
    return INDEX


def occlusion_pages(store_path: Path, context: AtlasContext, tables: RunTables,
                    out_dir: Path) -> PageExtras:
    """Write the occlusion index and one page per occluded image into ``out_dir``; return the
    index card and the tracked units' links."""
    import zarr

    from pipeline.labelled import array_in

    store = zarr.open_group(store_path, mode="r")
    meta = OcclusionMeta.from_attrs(store.attrs)
    arrays = {name: np.asarray(array_in(store, name)[...]) for name in
              ("image", "label", "images", "tracked_unit", "position", "box", "clean", "total",
               "prob_true", "predicted", "predicted_prob", "projection")}
    entries = [_write_image(i, arrays, meta, tables, Path(out_dir))
               for i in range(len(arrays["image"]))]
    geometry = {"size": meta.size, "stride": meta.stride, "grid": meta.grid,
                "layer": meta.layer}
    for i, entry in enumerate(entries):
        before = entries[i - 1] if i > 0 else None
        after = entries[i + 1] if i + 1 < len(entries) else None
        write_page(out_dir, entry.page, "occlusion.html", context, entry=entry,
                   geometry=geometry, ramp=ramp_css(), probability=format_probability,
                   prev_link=f"{before.image_id}.html" if before else None,
                   next_link=f"{after.image_id}.html" if after else None)
    write_page(out_dir, INDEX, "occlusion_index.html", context, entries=entries,
               geometry=geometry, probability=format_probability)

    card = None
    if entries:
        card = f"{OCCLUSION_DIR}/card.png"
        save_image(_card(arrays, meta, 0), Path(out_dir) / card)
    note = (f"{len(entries)} images; a {geometry['size']} px grey square every "
            f"{geometry['stride']} px; the strongest {geometry['layer']} feature map tracked")
    links: dict[tuple[str, int], tuple[PageLink, ...]] = {}
    for entry in entries:
        link = PageLink(f"occlusion of {entry.file}", entry.page,
                        f"the strongest {entry.layer} map in that image")
        links[(entry.layer, entry.unit)] = links.get((entry.layer, entry.unit), ()) + (link,)
    return PageExtras(link=PageLink("Occlusion (Figure 7)", INDEX, note, image=card),
                      unit_links=links)


def _write_image(i: int, arrays: dict, meta: OcclusionMeta, tables: RunTables,
                 out_dir: Path) -> OcclusionImage:
    """Write the pictures of occluded image ``i``; describe its page."""
    image_id, label = int(arrays["image"][i]), int(arrays["label"][i])
    folder = f"{OCCLUSION_DIR}/{image_id}"
    height, width = meta.image_size
    rows, columns = meta.grid
    stride = meta.stride
    peak, clean_total, clean_prob, clean_pred, clean_pred_prob = (float(v) for v in
                                                                  arrays["clean"][i])
    total, prob = arrays["total"][i], arrays["prob_true"][i]
    predicted = arrays["predicted"][i]
    names = tables.classes

    def name(index: int) -> str:
        return names[index] if 0 <= index < len(names) else f"class {index}"

    suffix = ".png" if max(height, width) <= 128 else ".jpg"
    paths = {key: f"{folder}/{key}{suffix if key == 'input' else '.png'}"
             for key in ("input", "total", "prob", "classes")}
    # the projection losslessly, once per display curve (the page shows the reader's)
    paths.update({f"projection-{curve}": f"{folder}/projection-{curve}.webp" for curve in CURVES})
    legend = class_colours(predicted, label)
    total_high = max(float(total.max()), clean_total)
    pictures = {"input": shown_rgb(arrays["images"][i], fourth_beside=False),
                **{f"projection-{curve}": shown_rgb(curve_display(
                    arrays["projection"][i].astype(np.float32), curve), fourth_beside=False)
                   for curve in CURVES},
                "total": ramp_rgb(total, 0.0, total_high), "prob": ramp_rgb(prob, 0.0, 1.0),
                "classes": class_rgb(predicted, legend)}
    from PIL import Image

    for key, pixels in pictures.items():
        save_image(Image.fromarray(pixels, "RGB"), out_dir / paths[key])

    lowest = np.unravel_index(int(np.argmin(prob)), prob.shape)
    unit = int(arrays["tracked_unit"][i])
    top, left, bottom, right = (int(v) for v in arrays["box"][i])
    panels = (
        MapPanel("b", "Total activation of the tracked feature map", paths["total"],
                 "map of the tracked feature map's total activation per occluder position",
                 OVERLAY_OPACITY, 0.0, total_high,
                 (("unoccluded", clean_total, format_number(clean_total)),
                  ("lowest", float(total.min()), format_number(float(total.min())))),
                 clean_total),
        MapPanel("d", "Probability of the true class", paths["prob"],
                 "map of the true class's probability per occluder position",
                 OVERLAY_OPACITY, 0.0, 1.0,
                 (("unoccluded", clean_prob, format_probability(clean_prob)),
                  ("lowest", float(prob.min()), format_probability(float(prob.min())))),
                 clean_prob),
        MapPanel("e", "Most probable class", paths["classes"],
                 "map of the most probable class per occluder position", CLASS_OPACITY),
    )
    return OcclusionImage(
        image_id=image_id, page=f"{OCCLUSION_DIR}/{image_id}.html",
        file=str(tables.manifest["path"].iloc[image_id]), true_class=name(label),
        predicted_class=name(int(clean_pred)), predicted_prob=clean_pred_prob,
        clean_prob=clean_prob, lowest_prob=float(prob.min()),
        lowest_at=(min(height, round((lowest[0] + 0.5) * stride)),
                   min(width, round((lowest[1] + 0.5) * stride))),
        layer=meta.layer, unit=unit, unit_page=unit_path(meta.layer, unit),
        peak=peak, position=(int(arrays["position"][i][0]), int(arrays["position"][i][1])),
        clean_total=clean_total, input=paths["input"], projection=paths["projection-linear"],
        projection_lifted=paths["projection-lifted"],
        panels=panels,
        classes=tuple(ClassEntry(name(entry.label) if entry.label >= 0 else "other classes",
                                 entry.colour, entry.share, entry.label == label)
                      for entry in legend),
        rf_box=(top / height, left / width, bottom / height, right / width),
        map_box=(0.0, 0.0, rows * stride / height, columns * stride / width))


def format_probability(value: float) -> str:
    """Three decimals, so that 0.99999 is not shown as 1 and 1e-24 not in e-notation."""
    if 0 < value < 0.0005:
        return "< 0.001"
    if 0.9995 <= value < 1:
        return "> 0.999"
    return f"{value:.3f}"


def _card(arrays: dict, meta: OcclusionMeta, i: int):
    """The index card's picture of image ``i``: the image, then maps (b), (d), (e) over it."""
    image, stride = shown_rgb(arrays["images"][i], fourth_beside=False), meta.stride
    total, clean_total = arrays["total"][i], float(arrays["clean"][i][1])
    legend = class_colours(arrays["predicted"][i], int(arrays["label"][i]))
    maps = (ramp_rgb(total, 0.0, max(float(total.max()), clean_total)),
            ramp_rgb(arrays["prob_true"][i], 0.0, 1.0),
            class_rgb(arrays["predicted"][i], legend))
    opacities = (OVERLAY_OPACITY, OVERLAY_OPACITY, CLASS_OPACITY)
    return card_image([image, *(over_image(image, rgb, stride, opacity)
                                for rgb, opacity in zip(maps, opacities, strict=True))])

"""The atlas's invariance page (Figure 5), from ``invariance.parquet`` (see
``pipeline.experiments.invariance_run``).

``invariance.html`` shows the sampled images small, what each transform does to one of them,
then per transform (vertical translation, scaling, rotation) three line charts as inline SVG:
the distance between the original's and the transformed copy's feature vectors at layer 1 and
at the last hidden layer, and P(true class); one line per image.

Several images share an axis, so a distance chart divides every distance by one number: the
mean, over the sampled images, of the original's feature-vector norm at that layer (the same
number for every line and every transform, stated on the page). A distance of 1 is then "as far
as a typical feature vector is long"; the curves keep the shapes the paper plots.

Each transform has its own sample: classes the transform can change (the demo's stripes under
rotation, or the workflow's ``[invariance] exclude_*``) are left out of it, and the section says
which and why. Curves whose label may not survive the transform by the model's own answers
(:mod:`pipeline.experiments.invariance_flags`) are flagged under their chart and drawn with
hollow dots. Every point's values are in a table under each transform too, so they are reachable
by keyboard and touch, not only by hovering a point.

The pictures are stored as PNG in the input's channels; grey and RGB ones are written as they
are, RGBA ones drawn like every picture of the atlas (:mod:`pipeline.atlas.channels`: channel 4
in grey beside channels 1-3, not as transparency).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atlas.context import AtlasContext, PageExtras, PageLink
from pipeline.atlas.gather import RunTables
from pipeline.atlas.line_charts import LineChart, line_chart, tick_label
from pipeline.atlas.render import write_page
from pipeline.atomic import write_bytes
from pipeline.experiments.invariance_flags import CONFIDENT, STABLE, LabelFlag, label_flags

PAGE = "invariance.html"
PICTURES_DIR = "invariance"
#: per transform: heading, x-axis label (with units), tick values (None: automatic)
TRANSFORMS = {
    "translation": ("Vertical translation", "shift down (px)", None),
    "scale": ("Scaling", "scale (×)", None),
    "rotation": ("Rotation", "rotation (degrees)", (0, 90, 180, 270)),
}


@dataclass(frozen=True)
class SampleImage:
    image_id: int
    index: int  # its line's colour and dash
    file: str
    true_class: str
    picture: str  # relative to the atlas root
    transforms: tuple[str, ...] = ()  # those it was measured under
    left_out: tuple[str, ...] = ()  # transforms its class is excluded from


@dataclass(frozen=True)
class Flag:
    """A curve whose image's label may not survive the transform (see invariance_flags)."""

    sample: SampleImage
    text: str


@dataclass(frozen=True)
class ValueTable:
    """One chart's values as a table: a row per amount, a column per image."""

    title: str
    columns: tuple[SampleImage, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]  # (amount, one cell per column)


@dataclass(frozen=True)
class Example:
    amount: str
    picture: str


@dataclass(frozen=True)
class TransformSection:
    key: str
    title: str
    charts: tuple[LineChart, ...]
    examples: tuple[Example, ...]
    excluded: tuple[str, ...] = ()  # class names left out of this transform's sample
    excluded_by: str = ""  # who left them out, in words
    flags: tuple[Flag, ...] = ()
    tables: tuple[ValueTable, ...] = ()
    example_file: str = ""  # the image whose copies ``examples`` shows

    @property
    def flagged(self) -> frozenset[int]:
        """The sample indices (line colours) of the flagged curves."""
        return frozenset(flag.sample.index for flag in self.flags)


def main_page(store_path: Path, context: AtlasContext) -> str:
    """The page the header links (``pipeline.atlas.navigation``): the only one."""
    return PAGE


def invariance_pages(store_path: Path, context: AtlasContext, tables: RunTables,
                     out_dir: Path) -> PageExtras:
    """Write ``invariance.html`` and its pictures into ``out_dir``; return its index card."""
    import pyarrow.parquet as pq

    table = pq.read_table(store_path)
    about = json.loads(table.schema.metadata[b"invariance"])
    rows = table.to_pandas()
    out_dir = Path(out_dir)
    order = list(dict.fromkeys(int(i) for i in rows["image_id"]))
    measured = rows.groupby("image_id")["transform"].unique()
    excluded = about.get("excluded", {})  # none in a table of release 0.8
    samples = []
    for index, image_id in enumerate(order):
        picture = f"{PICTURES_DIR}/{image_id}.png"
        write_bytes(out_dir / picture, _shown_png(about["images"][str(image_id)]))
        label = int(rows.loc[rows["image_id"] == image_id, "label"].iloc[0])
        name = _class_name(tables, label)
        samples.append(SampleImage(
            image_id, index, str(tables.manifest["path"].iloc[image_id]), name, picture,
            tuple(t for t in TRANSFORMS if t in set(measured[image_id])),
            tuple(t for t in TRANSFORMS if name in excluded.get(t, ()))))
    scales = {column: float(rows.groupby("image_id")[column].first().mean())
              for column in ("norm_layer1", "norm_last")}
    flags = {(flag.image_id, flag.transform): flag for flag in label_flags(rows)}
    sections = tuple(_section(key, rows, samples, about, scales, tables, out_dir, flags)
                     for key in TRANSFORMS)
    write_page(out_dir, PAGE, "invariance.html", context, samples=samples, sections=sections,
               about=about, scales=scales, confident=CONFIDENT, stable=STABLE)
    card = _card(about, out_dir)
    note = (f"{len(samples)} images shifted, scaled and rotated: feature distances at "
            f"{about['layer1']} and the last hidden layer, and P(true class)")
    return PageExtras(link=PageLink("Invariance (Figure 5)", PAGE, note, image=card))


def _pixels(encoded: str, fourth_beside: bool = True) -> np.ndarray:
    """A stored picture (base64 PNG, grey, RGB or RGBA) as display pixels ``[h, w, 3]``."""
    import io

    from PIL import Image

    from pipeline.atlas.channels import shown_rgb

    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        pixels = np.asarray(image)
    return shown_rgb(pixels[..., None] if pixels.ndim == 2 else pixels, fourth_beside)


def _shown_png(encoded: str) -> bytes:
    """The PNG file of a stored picture: as stored, or drawn in RGB if it has 4 channels (a
    browser would take the fourth for transparency)."""
    import io

    from PIL import Image

    data = base64.b64decode(encoded)
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGBA":
            return data
    buffer = io.BytesIO()
    Image.fromarray(_pixels(encoded)).save(buffer, format="PNG")
    return buffer.getvalue()


def _card(about: dict, out_dir: Path) -> str | None:
    """The index card's picture: the example image at each rotation shown, side by side."""
    from pipeline.atlas.occlusion_images import card_image
    from pipeline.atlas.tiles import save_image

    encoded = [picture for _, picture in about.get("examples", {}).get("rotation", [])]
    if not encoded:
        return None
    pictures = [_pixels(picture, fourth_beside=False) for picture in encoded]
    path = f"{PICTURES_DIR}/card.png"
    save_image(card_image(pictures), out_dir / path)
    return path


def _class_name(tables: RunTables, label: int) -> str:
    return tables.classes[label] if 0 <= label < len(tables.classes) else f"class {label}"


def _section(key: str, rows: pd.DataFrame, all_samples: list[SampleImage], about: dict,
             scales: dict[str, float], tables: RunTables, out_dir: Path,
             flags: dict[tuple[int, str], LabelFlag]) -> TransformSection:
    """The three charts of one transform, and its example pictures (written here)."""
    title, x_label, x_ticks = TRANSFORMS[key]
    part = rows[rows["transform"] == key]
    samples = [sample for sample in all_samples if key in sample.transforms]
    examples = []
    for n, (amount, encoded) in enumerate(about.get("examples", {}).get(key, [])):
        picture = f"{PICTURES_DIR}/{key}-{n}.png"
        write_bytes(out_dir / picture, _shown_png(encoded))
        examples.append(Example(_amount(key, float(amount)), picture))

    def lines(column: str, column_text: str, scale: float):
        drawn = []
        for sample in samples:
            mine = part[part["image_id"] == sample.image_id].sort_values("amount")
            tips = [f"{sample.file}, {_amount(key, a)}: {column_text} {v:.3g}, predicted "
                    f"{_class_name(tables, int(p))}"
                    for a, v, p in zip(mine["amount"], mine[column], mine["predicted"],
                                       strict=True)]
            drawn.append((sample.file, mine["amount"].to_numpy(float),
                          mine[column].to_numpy(float) / (scale or 1.0), tips))
        return drawn

    charts = []
    for column, chart_title, y_label in (
            ("distance_layer1", f"Layer 1 ({about['layer1']})", "distance ÷ mean norm"),
            ("distance_last", f"Last hidden layer ({about['last']})", "distance ÷ mean norm"),
            ("prob_true", "P(true class)", "probability")):
        column_text = "P(true class)" if column == "prob_true" else "distance"
        scale = scales["norm_layer1" if column == "distance_layer1" else "norm_last"] \
            if column != "prob_true" else 1.0
        chart = line_chart(chart_title, x_label, y_label, lines(column, column_text, scale),
                           y_high=1.0 if column == "prob_true" else None, x_ticks=x_ticks)
        # each line keeps its image's colour, whichever images this transform has
        charts.append(dataclasses.replace(chart, lines=tuple(
            dataclasses.replace(line, index=sample.index)
            for line, sample in zip(chart.lines, samples, strict=True))))
    flagged = []
    for sample in samples:
        flag = flags.get((sample.image_id, key))
        if flag is not None:
            span = (_amount(key, flag.low) if flag.low == flag.high
                    else f"{_amount(key, flag.low)} to {_amount(key, flag.high)}")
            flagged.append(Flag(sample, f"from {span} the model names "
                                f"{_class_name(tables, flag.other)} (up to "
                                f"{100 * flag.prob:.0f} %), not {sample.true_class}"))
    by_id = {sample.image_id: sample for sample in all_samples}
    example_id = about.get("example_image")
    example = by_id.get(int(example_id)) if example_id is not None else None
    return TransformSection(
        key, title, tuple(charts), tuple(examples),
        excluded=tuple(about.get("excluded", {}).get(key, ())),
        excluded_by=about.get("excluded_by", {}).get(key, ""), flags=tuple(flagged),
        tables=_value_tables(key, part, samples, scales, tables, charts),
        example_file=(example or all_samples[0]).file)


def _value_tables(key: str, part: pd.DataFrame, samples: list[SampleImage],
                  scales: dict[str, float], tables: RunTables,
                  charts: list[LineChart]) -> tuple[ValueTable, ...]:
    """The charts' values as tables (a row per amount, a column per image): what hovering a
    point shows, reachable by keyboard, touch and screen reader."""
    amounts = sorted(set(float(a) for a in part["amount"]))
    out = []
    for chart, column in zip(charts, ("distance_layer1", "distance_last", "prob_true"),
                             strict=True):
        scale = 1.0 if column == "prob_true" else (
            scales["norm_layer1" if column == "distance_layer1" else "norm_last"] or 1.0)
        cells: dict[tuple[int, float], str] = {}
        for image_id, amount, value, predicted in zip(part["image_id"], part["amount"],
                                                      part[column], part["predicted"],
                                                      strict=True):
            text = f"{value / scale:.3g}"
            if column == "prob_true":
                text += f" ({_class_name(tables, int(predicted))})"
            cells[(int(image_id), float(amount))] = text
        out.append(ValueTable(chart.title, tuple(samples), tuple(
            (_amount(key, amount), tuple(cells.get((s.image_id, amount), "–") for s in samples))
            for amount in amounts)))
    return tuple(out)


def _amount(key: str, amount: float) -> str:
    if key == "translation":
        return f"{amount:+.1f} px" if not np.isclose(amount, 0) else "0 px"
    if key == "scale":
        return f"×{tick_label(round(amount, 2))}"
    return f"{tick_label(amount)}°"

"""The atlas's invariance page (Figure 5), from ``invariance.parquet`` (see
``pipeline.experiments.invariance_table``).

``invariance.html`` shows the sampled images small, what each transform does to one of them,
then per transform (vertical translation, scaling, rotation) three line charts as inline SVG:
the distance between the original's and the transformed copy's feature vectors at layer 1 and
at the last hidden layer, and P(true class); one line per image.

Several images share an axis, so a distance chart divides every distance by one number: the
mean, over the sampled images, of the original's feature-vector norm at that layer (the same
number for every line and every transform, stated on the page). A distance of 1 is then "as far
as a typical feature vector is long"; the curves keep the shapes the paper plots.

The pictures are stored as PNG in the input's channels; grey and RGB ones are written as they
are, RGBA ones drawn like every picture of the atlas (:mod:`pipeline.atlas.channels`: channel 4
in grey beside channels 1-3, not as transparency).
"""

from __future__ import annotations

import base64
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


def invariance_pages(store_path: Path, context: AtlasContext, tables: RunTables,
                     out_dir: Path) -> PageExtras:
    """Write ``invariance.html`` and its pictures into ``out_dir``; return its index card."""
    import pyarrow.parquet as pq

    table = pq.read_table(store_path)
    about = json.loads(table.schema.metadata[b"invariance"])
    rows = table.to_pandas()
    out_dir = Path(out_dir)
    order = list(dict.fromkeys(int(i) for i in rows["image_id"]))
    samples = []
    for index, image_id in enumerate(order):
        picture = f"{PICTURES_DIR}/{image_id}.png"
        write_bytes(out_dir / picture, _shown_png(about["images"][str(image_id)]))
        label = int(rows.loc[rows["image_id"] == image_id, "label"].iloc[0])
        samples.append(SampleImage(image_id, index, str(tables.manifest["path"].iloc[image_id]),
                                   _class_name(tables, label), picture))
    scales = {column: float(rows.groupby("image_id")[column].first().mean())
              for column in ("norm_layer1", "norm_last")}
    sections = tuple(_section(key, rows, samples, about, scales, tables, out_dir)
                     for key in TRANSFORMS)
    write_page(out_dir, PAGE, "invariance.html", context, samples=samples, sections=sections,
               about=about, scales=scales)
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


def _section(key: str, rows: pd.DataFrame, samples: list[SampleImage], about: dict,
             scales: dict[str, float], tables: RunTables, out_dir: Path) -> TransformSection:
    """The three charts of one transform, and its example pictures (written here)."""
    title, x_label, x_ticks = TRANSFORMS[key]
    part = rows[rows["transform"] == key]
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
        charts.append(line_chart(chart_title, x_label, y_label,
                                 lines(column, column_text, scale),
                                 y_high=1.0 if column == "prob_true" else None,
                                 x_ticks=x_ticks))
    return TransformSection(key, title, tuple(charts), tuple(examples))


def _amount(key: str, amount: float) -> str:
    if key == "translation":
        return f"{amount:+.1f} px" if not np.isclose(amount, 0) else "0 px"
    if key == "scale":
        return f"×{tick_label(round(amount, 2))}"
    return f"{tick_label(amount)}°"

"""The atlas's numbers as files a reader can take away (as NetDissect offers its tally CSVs).

Written by :func:`pipeline.atlas.render.write_atlas` into the atlas folder, each through a
temporary file and an atomic rename (:mod:`pipeline.atomic`)::

    data/<layer label>.csv   one row per unit of the layer: the layer page's table
    data/atlas.json          the whole atlas: model, data set, run, every layer and unit with
                             the same statistics and its top images, and the experiments

CSV columns (:data:`UNIT_COLUMNS`, then one column per stored quantile of the unit's per-image
maximum, e.g. ``q99``): ``layer``, ``unit``, ``dead``, ``weak``, ``peak`` (the largest
activation over the data set), ``mean_max`` and ``std_max`` (mean and standard deviation over
the images of the unit's per-image maximum), ``frac_active`` (share of the images where the
maximum is above zero), ``shown_class`` (what the card says: the named class or "mixed"),
``named_class`` (empty unless a class dominates the top images), ``top_class`` and
``top_class_share`` (the most frequent true class among the unit's top images and its share),
``n_selectivity`` (how many top images those shares count), ``class_entropy`` (bits, of that
class histogram), ``n_images`` (top images shown, at most top k), ``page`` (the unit's page,
relative to the atlas root). Booleans are ``true``/``false``; missing values are empty.

``atlas.json`` has ``format`` (:data:`FORMAT`, bumped when a key changes meaning), ``model``,
``data``, ``run``, ``layers`` (each with its facts and ``units``: the CSV's values, plus
``quantiles`` as an object, ``classes`` as ``[name, count]`` pairs, most frequent first, and
``top_images`` as ``{rank (1-based), file, true_class, predicted_class, value}``; with the
featurevis stage's inputs, ``optimised`` as ``{objective, driven, peak, data_peak, value,
start, picture}``, one per objective, and the run's ``optimisation`` as ``{steps, lr}``), and
``experiments`` (``{title, page, note}``: what the index's cards say). Only relative paths and
the data's own file names: no local folder appears in either file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pipeline.atlas.context import AtlasContext, LayerEntry, UnitEntry
from pipeline.atlas.site_paths import LAYERS_DIR, unit_path
from pipeline.atomic import write_bytes

DATA_DIR = "data"
ATLAS_JSON = f"{DATA_DIR}/atlas.json"
FORMAT = "deconv-atlas-export/1"
UNIT_COLUMNS = ("layer", "unit", "dead", "weak", "peak", "mean_max", "std_max", "frac_active",
                "shown_class", "named_class", "top_class", "top_class_share", "n_selectivity",
                "class_entropy", "n_images", "page")


def layer_csv_path(label: str) -> str:
    """The layer's CSV, relative to the atlas root: ``data/conv3.csv``."""
    return f"{DATA_DIR}/{label}.csv"


def write_exports(context: AtlasContext, out_dir: Path) -> list[str]:
    """Write every layer's CSV and ``atlas.json`` into ``out_dir``; return their paths
    (relative to the atlas root)."""
    out_dir = Path(out_dir)
    written = []
    for layer in context.layers:
        path = layer_csv_path(layer.label)
        write_bytes(out_dir / path, layer_csv(layer).encode("utf-8"))
        written.append(path)
    text = json.dumps(atlas_summary(context), ensure_ascii=False, indent=1, allow_nan=False)
    write_bytes(out_dir / ATLAS_JSON, text.encode("utf-8"))
    written.append(ATLAS_JSON)
    return written


def _quantile_names(layer: LayerEntry) -> list[str]:
    return list(dict.fromkeys(name for unit in layer.units for name, _ in unit.quantiles))


def _number(value: float | None) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def unit_values(layer: LayerEntry, unit: UnitEntry) -> dict[str, Any]:
    """The unit's row of the layer table (:data:`UNIT_COLUMNS`), as Python values."""
    return {
        "layer": layer.label, "unit": unit.unit, "dead": bool(unit.dead),
        "weak": unit.weak, "peak": _number(unit.peak),
        "mean_max": _number(unit.mean_max), "std_max": _number(unit.std_max),
        "frac_active": _number(unit.frac_active),
        "shown_class": None if unit.dead or unit.top_class is None else unit.shown_class,
        "named_class": unit.named_class, "top_class": unit.top_class,
        "top_class_share": _number(unit.top_class_share), "n_selectivity": unit.n_selectivity,
        "class_entropy": _number(unit.class_entropy), "n_images": unit.n_images,
        "page": unit_path(layer.label, unit.unit),
    }


def layer_csv(layer: LayerEntry) -> str:
    """The layer's unit table as CSV text (see the module doc)."""
    quantiles = _quantile_names(layer)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*UNIT_COLUMNS, *quantiles])
    for unit in layer.units:
        values = unit_values(layer, unit)
        own = dict(unit.quantiles)
        row = [values[column] for column in UNIT_COLUMNS] + [own.get(name) for name in quantiles]
        writer.writerow(["" if value is None else
                         ("true" if value is True else "false" if value is False else value)
                         for value in row])
    return buffer.getvalue()


def _unit_summary(layer: LayerEntry, unit: UnitEntry) -> dict[str, Any]:
    summary = unit_values(layer, unit)
    del summary["layer"]
    summary["quantiles"] = {name: _number(value) for name, value in unit.quantiles}
    summary["classes"] = [[name, int(count)] for _, name, count in unit.classes]
    summary["top_images"] = [
        {"rank": image.rank + 1, "file": image.file, "true_class": image.true_class,
         "predicted_class": image.pred_class, "value": _number(image.value)}
        for image in unit.top_images]
    if unit.optimised:  # the featurevis stage's inputs (the key is absent without them)
        summary["optimised"] = [
            {"objective": image.objective, "driven": image.driven, "peak": _number(image.peak),
             "data_peak": _number(image.data_peak), "value": _number(image.value),
             "start": _number(image.start),
             "picture": image.picture.image if image.picture else None}
            for image in unit.optimised]
    return summary


def atlas_summary(context: AtlasContext) -> dict[str, Any]:
    """Everything ``atlas.json`` holds (see the module doc)."""
    return {
        "format": FORMAT, "title": context.title, "version": context.version,
        "generated": context.generated,
        "model": {"name": context.model_name, "weights": context.weights,
                  "parameters": context.parameters, "input_size": context.input_size,
                  "input_channels": context.input_channels},
        "data": {"name": context.dataset_name, "n_images": context.n_images,
                 "n_readable": context.n_readable, "n_skipped": context.n_skipped,
                 "n_classes": context.n_classes, "classes": list(context.class_names)},
        "run": {"workflow": context.workflow, "workflow_file": context.workflow_file,
                "top1": _number(context.top1), "top5": _number(context.top5),
                "val_accuracy": _number(context.val_accuracy), "top_k": context.top_k,
                "methods": list(context.all_methods), "devices": dict(context.devices),
                "stage_seconds": {stage: _number(s) for stage, s in context.stage_seconds},
                **({"optimisation": {"steps": context.optimisation.steps,
                                     "lr": context.optimisation.lr}}
                   if context.optimisation else {})},
        "layers": [
            {"label": layer.label, "module": layer.module, "out_shape": list(layer.out_shape),
             "receptive_field": layer.receptive_field, "n_units": layer.n_units,
             "n_dead": layer.n_dead,
             "n_weak": layer.n_weak,
             "page": f"{LAYERS_DIR}/{layer.label}.html", "csv": layer_csv_path(layer.label),
             "units": [_unit_summary(layer, unit) for unit in layer.units]}
            for layer in context.layers],
        "experiments": [{"title": link.title, "page": link.path, "note": link.note}
                        for link in context.experiments],
    }

"""The comparison pages from a hand-made Comparison: no run, no torch."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline.atlas.context import UnitEntry
from pipeline.compare.context import (
    Comparison,
    FilterGrid,
    LayerStats,
    RunFacts,
    RunSide,
    ShownLayer,
)
from pipeline.compare.site import is_comparison_site, write_site


def facts(name: str, **changes) -> RunFacts:
    values = dict(name=name, workflow_file=f"{name}.toml", model_name="zfnet_small",
                  parameters=1234, input_size=64, weights="trained in this run (seed 1, 2 "
                  "epochs)", dataset_name="shapes", n_images=120, n_readable=120, n_classes=10,
                  top1=0.5, top5=0.9, val_accuracy=0.5, method="deconvnet", top_k=9)
    return RunFacts(**{**values, **changes})


def stats(label: str, dead: int = 0, units: int = 4) -> LayerStats:
    live = dead < units
    value = 0.25 if live else None
    return LayerStats(label=label, module=f"features.{label}", n_units=units, n_dead=dead,
                      selectivity=value, peak_mean=value, peak_median=value,
                      activation_mean=value, activation_median=value, active_mean=value)


def side(out: Path, letter: str, name: str, labels: list[str], **changes) -> RunSide:
    folder = letter.lower()
    (out / folder).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (128, 128, 128)).save(out / folder / "filters.png")
    tile = f"{folder}/tiles/conv2/0001.png"
    (out / tile).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20)).save(out / tile)
    unit = UnitEntry(unit=1, dead=False, peak=2.0, top_class="<i>cat</i>", n_images=9,
                     tile=tile, top_class_share=0.6, n_selectivity=9, named_class="<i>cat</i>")
    return RunSide(
        side=letter, facts=facts(name, **changes),
        filters=FilterGrid(image=f"{folder}/filters.png", module="features.conv1", n_filters=4,
                           kernel=(7, 7), scale_min=0.1, scale_median=0.2, scale_max=0.3,
                           layer="conv1", n_dead=1),
        layers=tuple(stats(label, dead=4 if label == "conv5" else 0) for label in labels),
        second=ShownLayer(label="conv2", module="features.relu2", receptive_field=27,
                          n_units=4, n_dead=0, n_live=4, units=(unit,)))


def test_layers_are_matched_by_label_and_the_rest_said_to_be_in_one_run(tmp_path):
    comparison = Comparison(
        title="A vs B", generated="2026-01-01", version="0",
        a=side(tmp_path, "A", "first", ["conv1", "conv2", "conv5"]),
        b=side(tmp_path, "B", "second", ["conv1", "fc6", "conv2"], top1=0.4))
    assert [row.label for row in comparison.rows] == ["conv1", "conv2", "conv5", "fc6"]
    index = write_site(comparison, tmp_path).read_text(encoding="utf-8")
    assert index.count('<td class="muted">only in A</td>') == 5  # fc6 in each of 5 tables
    assert index.count('<td class="muted">only in B</td>') == 5  # conv5
    # A's conv5 has no live unit: the dead-units table counts them, the four others say so
    assert index.count('<td class="muted">all units dead</td>') == 4
    assert "4 of 4 <span" in index
    # facts that differ are marked, the equal ones are not
    assert '<tr class="differs"><th scope="row">Top-1 on these images</th>' in index
    assert '<tr><th scope="row">Model</th>' in index
    second = (tmp_path / "second-layer.html").read_text(encoding="utf-8")
    assert "&lt;i&gt;cat&lt;/i&gt;" in second and "<i>cat" not in second
    assert is_comparison_site(tmp_path)


def test_a_missing_picture_is_refused_before_a_page_links_it(tmp_path):
    comparison = Comparison(title="A vs B", generated="2026-01-01", version="0",
                            a=side(tmp_path, "A", "first", ["conv1"]),
                            b=side(tmp_path, "B", "second", ["conv1"]))
    (tmp_path / "b" / "filters.png").unlink()
    with pytest.raises(FileNotFoundError, match="b/filters.png"):
        write_site(comparison, tmp_path)


def test_only_a_folder_holding_a_comparison_counts_as_one(tmp_path):
    assert not is_comparison_site(tmp_path)
    (tmp_path / "index.html").write_text("<!doctype html><title>my page</title>")
    assert not is_comparison_site(tmp_path)

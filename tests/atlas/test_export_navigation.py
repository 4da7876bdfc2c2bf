"""Fast checks of what the browser tests exercise: the exports (CSV and JSON, atomic, relative),
the experiments in every page's header (those written by write_page included) and the search
index's pages and patch cells."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from pipeline.atlas import AtlasContext, LayerEntry, UnitEntry, write_atlas
from pipeline.atlas.context import PageLink
from pipeline.atlas.export import UNIT_COLUMNS, layer_csv
from pipeline.atlas.render import search_index, write_page

NAV = (PageLink("Invariance", "invariance.html", "Figure 5"),
       PageLink("Occlusion", "occlusion/index.html", "Figure 7"))


def _context() -> AtlasContext:
    layer = LayerEntry(
        label="conv1", module="features.0", out_shape=(3, 8, 8), receptive_field=5,
        preview=None, patch_cell=(10, 12, 34, 40),
        units=(UnitEntry(0, False, 2.5, "goldfish", 9, None, top_class_share=0.9,
                         n_selectivity=100, named_class="goldfish", class_entropy=0.4,
                         frac_active=0.25, mean_max=0.7, std_max=0.2,
                         quantiles=(("q50", 0.6), ("q99", 2.1)),
                         classes=((1, "goldfish", 90), (0, "a, \"cat\"", 10))),
               UnitEntry(1, True, 0.0, None, 0, None),
               UnitEntry(2, False, 1.0, 'a, "cat"', 3, None, top_class_share=0.4,
                         n_selectivity=3)))
    return AtlasContext(title="T", workflow="t", model_name="Net", dataset_name="D",
                        n_images=100, n_classes=2, top1=None, top5=None, val_accuracy=None,
                        layers=(layer,), filters_image=None, generated="2024-06-01",
                        version="0.1.0", method="deconvnet", top_k=9,
                        class_names=('a, "cat"', "goldfish"), experiment_nav=NAV)


def test_the_csv_has_one_row_per_unit_with_the_documented_columns():
    import io

    table = pd.read_csv(io.StringIO(layer_csv(_context().layers[0])))
    assert list(table.columns) == [*UNIT_COLUMNS, "q50", "q99"]
    assert table["unit"].tolist() == [0, 1, 2]
    assert table["dead"].tolist() == [False, True, False]
    assert table["shown_class"].tolist()[0::2] == ["goldfish", "mixed"]
    assert pd.isna(table["shown_class"][1]) and pd.isna(table["q99"][1])
    assert table["top_class"][2] == 'a, "cat"'  # quoted, not split
    assert table["page"].tolist()[0] == "units/conv1/0.html"


def test_write_atlas_writes_the_exports_and_a_header_with_the_experiments(tmp_path):
    context = _context()
    write_atlas(context, tmp_path)
    data = json.loads((tmp_path / "data" / "atlas.json").read_text(encoding="utf-8"))
    units = data["layers"][0]["units"]
    assert [u["unit"] for u in units] == [0, 1, 2] and units[0]["quantiles"]["q99"] == 2.1
    assert units[0]["classes"][0] == ["goldfish", 90]
    assert pd.read_csv(tmp_path / "data" / "conv1.csv")["unit"].tolist() == [0, 1, 2]
    assert not list((tmp_path / "data").glob("*.tmp*"))  # written through atomic renames
    for page, root in (("index.html", ""), ("layers/conv1.html", "../"),
                       ("units/conv1/2.html", "../../")):
        html = (tmp_path / page).read_text(encoding="utf-8")
        assert f'href="{root}invariance.html"' in html, page
        assert f'href="{root}occlusion/index.html"' in html, page
        assert 'aria-current="page">Invariance' not in html
    assert 'href="data/conv1.csv"' in (tmp_path / "index.html").read_text(encoding="utf-8")
    # an experiment's own pages have the header too, their section marked current
    write_page(tmp_path, "occlusion/7.html", "base.html", context)
    html = (tmp_path / "occlusion" / "7.html").read_text(encoding="utf-8")
    assert 'href="../invariance.html"' in html
    assert 'aria-current="page">Occlusion' in html


def test_the_search_index_lists_the_experiments_and_the_layers_patch_cells():
    text = search_index(_context())
    data = json.loads(text.split("=", 1)[1].rstrip().rstrip(";"))
    assert data["cells"] == [[10, 12, 34, 40]]
    titles = {page[0]: page for page in data["pages"]}
    assert titles["Invariance (Figure 5)"][1] == "invariance.html"
    assert "rotation" in titles["Invariance (Figure 5)"][2]
    assert "occlusion" in titles["Occlusion (Figure 7)"][2]


@pytest.mark.parametrize("nav", [(), NAV])
def test_pages_render_with_or_without_experiments(tmp_path, nav):
    write_atlas(dataclasses.replace(_context(), experiment_nav=nav), tmp_path)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert ("experiment-nav" in html) == bool(nav)

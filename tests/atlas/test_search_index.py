"""The search index's rows have named fields on both sides: the Python that writes them and
atlas.js, which reads them, spell the same names in the same order."""

from __future__ import annotations

import re
from importlib import resources

from pipeline.atlas.navigation import SEARCH_PAGE_FIELDS
from pipeline.atlas.render import SEARCH_UNIT_FIELDS


def _js_fields(name: str) -> tuple[str, ...]:
    script = resources.files("pipeline.atlas").joinpath("static/atlas.js").read_text()
    body = re.search(rf"var {name} = \{{([^}}]*)\}}", script)
    assert body, f"atlas.js has no {name} = {{...}}"
    pairs = re.findall(r"(\w+):\s*(\d+)", body.group(1))
    assert [int(index) for _, index in pairs] == list(range(len(pairs))), pairs
    return tuple(field for field, _ in pairs)


def test_atlas_js_names_the_unit_rows_as_the_writer_does():
    assert _js_fields("UNIT") == SEARCH_UNIT_FIELDS


def test_atlas_js_names_the_page_rows_as_the_writer_does():
    assert _js_fields("PAGE") == SEARCH_PAGE_FIELDS


def test_atlas_js_reads_no_row_by_a_bare_position():
    script = resources.files("pipeline.atlas").joinpath("static/atlas.js").read_text()
    assert not re.findall(r"\b(?:row|r|page)\[\d+\]", script)

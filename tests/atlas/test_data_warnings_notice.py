"""The index's notice of data warnings: escaped, capped, and absent when there are none."""

from __future__ import annotations

import html
import re
from pathlib import Path

from pipeline.atlas import AtlasContext, write_atlas

EVIL = "class folder '<img src=x onerror=alert(1)>' has no images"


def _index(out: Path, warnings: tuple[str, ...]) -> str:
    context = AtlasContext(
        title="t", workflow="w", model_name="m", dataset_name="d", n_images=3, n_classes=2,
        top1=None, top5=None, val_accuracy=None, layers=(), filters_image=None,
        generated="2024-06-01", version="0", method="deconvnet", top_k=9,
        data_warnings=warnings)
    return write_atlas(context, out).read_text(encoding="utf-8")


def _notice(page: str) -> str:
    found = re.search(r'<div class="data-warnings".*?</div>', page, re.S)
    assert found, "no notice"
    return found.group(0)


def test_warnings_are_escaped_inside_the_data_card(tmp_path: Path) -> None:
    page = _index(tmp_path, (EVIL, "class folder 'cat' has no images"))
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    data_card = page[page.index('id="data-card"'):page.index('id="run-card"')]
    notice = _notice(data_card)
    items = [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", notice)]
    assert items == [EVIL, "class folder 'cat' has no images"]
    assert "(2 warnings)" in notice and "first" not in notice


def test_a_long_list_is_cut_and_says_where_the_rest_is(tmp_path: Path) -> None:
    warnings = tuple(f"class folder 'n{i:08d}' has no images" for i in range(14))
    notice = _notice(_index(tmp_path, warnings))
    assert notice.count("<li>") == 10 and "n00000009" in notice and "n00000010" not in notice
    assert "first 10 of 14" in notice and "data_warnings.json" in notice


def test_no_warnings_no_notice(tmp_path: Path) -> None:
    page = _index(tmp_path, ())
    assert "data-warnings" not in page and "Check the data folder" not in page

"""Write the comparison site's pages from a gathered :class:`Comparison`.

Output (relative links only, so the folder works from ``file://``, can be moved, zipped or
served under any URL prefix; nothing is fetched, no script at all)::

    index.html          both runs' first-layer filters (Figure 6 a, b), their facts, and per
                        layer their dead units, selectivity and activations
    second-layer.html   each run's second layer: its most selective units (Figure 6 c, d)
    assets/style.css    the atlas's stylesheet (and its icon), so both look alike
    a/, b/              each run's pictures, written by :mod:`pipeline.compare.gather`

The templates are the atlas's environment's (autoescaped, strict), ``compare*.html``.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from pipeline.atlas.render import CRISP_MAX_WIDTH, ImageSizes, environment
from pipeline.atomic import write_bytes
from pipeline.compare.context import Comparison

INDEX = "index.html"
SECOND_LAYER = "second-layer.html"
ASSETS = ("style.css", "favicon.svg")  # not atlas.js: these pages need no script
#: Marks a folder as a comparison site: ``compare`` replaces only such a folder.
GENERATOR = "Deconv Atlas compare"


def write_site(comparison: Comparison, out_dir: Path) -> Path:
    """Render the pages into ``out_dir`` (its pictures already written); return the index.

    Raises ``FileNotFoundError`` when a linked picture is missing, as the atlas does."""
    out_dir = Path(out_dir)
    sizes = ImageSizes(out_dir)
    _copy_assets(out_dir / "assets")
    pages = {INDEX: "compare_index.html", SECOND_LAYER: "compare_layer.html"}
    for path, template in pages.items():
        _write_page(out_dir, path, template, comparison, sizes)
    return out_dir / INDEX


def is_comparison_site(folder: Path) -> bool:
    """Whether ``folder`` holds a site this command wrote (so replacing it loses nothing)."""
    index = folder / INDEX
    try:
        head = index.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    return f'content="{GENERATOR}' in head


def _write_page(out_dir: Path, path: str, template: str, comparison: Comparison,
                sizes: ImageSizes) -> None:
    depth = len(PurePosixPath(path).parts) - 1
    root = "../" * depth

    def href(target: str) -> str:
        return root + quote(target)

    page = environment().get_template(template).render(
        ctx=comparison, root=root, href=href, size=sizes.__getitem__,
        crisp_max_width=CRISP_MAX_WIDTH, generator=GENERATOR, index=INDEX,
        second_layer=SECOND_LAYER, current=path)
    write_bytes(out_dir / PurePosixPath(path), page.encode("utf-8"))


def _copy_assets(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    static = resources.files("pipeline.atlas").joinpath("static")
    for name in ASSETS:
        with resources.as_file(static.joinpath(name)) as source:
            shutil.copyfile(source, target / name)

"""The HTML atlas (pipeline.atlas.render): pages, relative links, escaping, dead units."""

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from jinja2 import StrictUndefined

from pipeline.atlas import (
    AtlasContext,
    LayerEntry,
    UnitEntry,
    filter_grid,
    save_image,
    write_atlas,
)
from pipeline.atlas.render import environment
from tests.atlas.pictures import unit_pictures

EVIL = 'it\'s a "trap" <script>alert("x")</script>'


class _Page(HTMLParser):
    """Collects links, ids, tags and, per unit card, the images it contains."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.units: dict[str, dict] = {}  # id -> {"classes": ..., "imgs": [...], "text": ...}
        self._unit: str | None = None
        self._depth = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.links.append((tag, a[key]))
        if tag == "img":
            self.imgs.append(a)
        if tag == "li":
            if self._unit is not None:
                self._depth += 1
            elif (a.get("id") or "").startswith("unit-"):
                self._unit, self._depth = a["id"], 0
                self.units[a["id"]] = {"classes": (a.get("class") or "").split(), "imgs": []}
                self.units[a["id"]]["text"] = ""
        if self._unit is not None and tag == "img":
            self.units[self._unit]["imgs"].append(a)

    def handle_endtag(self, tag) -> None:
        if tag == "li" and self._unit is not None:
            if self._depth == 0:
                self._unit = None
            else:
                self._depth -= 1

    def handle_data(self, data) -> None:
        self.text.append(data)
        if self._unit is not None:
            self.units[self._unit]["text"] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _tile(out: Path, rel: str, n: int, size: int) -> dict:
    return unit_pictures(out, rel, n, size, seed=n * 100 + size)


def _context(out: Path) -> AtlasContext:
    """Three layers: live, dead, partial units, an evil class name, a layer with no preview."""
    conv1 = LayerEntry(
        label="conv1",
        module="features.relu1",
        out_shape=(4, 55, 55),
        receptive_field=7,
        units=(
            UnitEntry(0, False, 3.25, "tabby cat", 9, **_tile(out, "tiles/conv1/u0", 9, 7),
                      top_class_share=0.3),  # not dominant: "mixed"
            UnitEntry(1, True, 0.0, None, 0, None),
            UnitEntry(2, False, 0.5, EVIL, 3, **_tile(out, "tiles/conv1/u2", 3, 7),
                      top_class_share=0.8, named_class=EVIL),
            UnitEntry(3, False, 1250.0, None, 9, **_tile(out, "tiles/conv1/u3", 9, 7)),
        ),
        preview="tiles/conv1/u0-patches.jpg",
    )
    conv2 = LayerEntry(
        label="conv2",
        module="features.relu2",
        out_shape=(2, 13, 13),
        receptive_field=27,
        units=(
            UnitEntry(0, True, 0.0, None, 0, None),
            UnitEntry(1, False, 7.0, "goldfish", 9, **_tile(out, "tiles/conv2/u 1", 9, 27),
                      top_class_share=0.6, named_class="goldfish"),
        ),
        preview=None,
    )
    fc = LayerEntry(
        label="conv5.relu",
        module="features.29",
        out_shape=(1, 6, 6),
        receptive_field=163,
        units=(UnitEntry(0, False, 12.0, "volcano", 9, **_tile(out, "t/fc0", 9, 40),
                         top_class_share=1.0, named_class="volcano"),),
        preview="t/fc0-patches.jpg",
    )
    save_image(filter_grid(np.random.default_rng(0).normal(size=(8, 3, 7, 7)), 4), out / "f.png")
    return AtlasContext(
        title=f"Atlas of {EVIL}",
        workflow="demo",
        model_name=f"Net {EVIL}",
        dataset_name="Tiny-10",
        n_images=100,
        n_classes=10,
        top1=0.5,
        top5=0.91,
        val_accuracy=None,
        layers=(conv1, conv2, fc),
        filters_image="f.png",
        generated="2024-06-01",
        version="0.1.0",
        method="deconvnet",
        top_k=9,
    )


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> tuple[Path, AtlasContext, Path]:
    out = tmp_path_factory.mktemp("atlas")
    context = _context(out)
    return out, context, write_atlas(context, out)


def _pages(out: Path) -> list[Path]:
    return sorted(out.rglob("*.html"))


def test_index_and_every_layer_page_exist(atlas) -> None:
    out, context, index = atlas
    assert index == out / "index.html"
    assert index.is_file()
    for layer in context.layers:
        assert (out / "layers" / f"{layer.label}.html").is_file()
    assert (out / "assets" / "style.css").is_file()
    units = [(layer.label, unit.unit) for layer in context.layers for unit in layer.units]
    for label, unit in units:  # one permalink page per unit, dead ones included
        assert (out / "units" / label / f"{unit}.html").is_file()
    assert len(_pages(out)) == 1 + len(context.layers) + len(units)


def test_every_link_is_relative_and_resolves(atlas) -> None:
    out, _, _ = atlas
    checked = 0
    for path in _pages(out):
        page = _parse(path)
        for tag, url in page.links:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{path.name}: external {url}"
            assert not url.startswith("/"), f"{path.name}: absolute {url}"
            if not parts.path:
                assert parts.fragment in page.ids, f"{path.name}: dangling #{parts.fragment}"
                continue
            target = (path.parent / unquote(parts.path)).resolve()
            assert target.is_file(), f"{path.name}: <{tag}> {url} does not resolve"
            assert target.is_relative_to(out.resolve())
            checked += 1
    assert checked > 20


def test_scripts_are_the_atlas_own_and_nothing_is_remote(atlas) -> None:
    out, _, _ = atlas
    for path in _pages(out):
        html = path.read_text(encoding="utf-8")
        sources = re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", html)
        # the package's scripts (atlas.js adds the search index), and one inline script: the
        # reader's display choices applied before the first paint
        assert sources and len(sources) == html.count("<script") - 1
        assert len(re.findall(r"<script>", html)) == 1
        for source in sources:
            assert (path.parent / source).resolve().parent == (out / "assets").resolve()
    script = (out / "assets" / "atlas.js").read_text()
    assert 'root + "assets/search-index.js"' in script
    assert (out / "assets" / "search-index.js").is_file()
    assert "fetch(" not in script and "XMLHttpRequest" not in script and "http" not in script
    css = (out / "assets" / "style.css").read_text()
    assert "@import" not in css and "url(" not in css and "http" not in css


def test_untrusted_text_is_escaped(atlas) -> None:
    out, _, _ = atlas
    for path in _pages(out):
        html = path.read_text(encoding="utf-8")
        assert "<script>alert" not in html
        assert '"trap"' not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)" in html
    conv1 = _parse(out / "layers" / "conv1.html")
    assert EVIL in conv1.units["unit-2"]["text"]  # the parsed text is the original name


def test_layer_page_shows_every_unit(atlas) -> None:
    out, context, _ = atlas
    for layer in context.layers:
        page = _parse(out / "layers" / f"{layer.label}.html")
        assert set(page.units) == {f"unit-{u.unit}" for u in layer.units}
        text = "".join(page.text)
        assert f"{layer.receptive_field} px" in text
        assert " × ".join(map(str, layer.out_shape)) in text


def test_dead_unit_shows_no_image(atlas) -> None:
    out, _, _ = atlas
    for label, unit in [("conv1", "unit-1"), ("conv2", "unit-0")]:
        card = _parse(out / "layers" / f"{label}.html").units[unit]
        assert "dead" in card["classes"]
        assert card["imgs"] == []
        assert "dead unit" in card["text"]


def test_live_unit_shows_its_pictures_pixel_for_pixel(atlas) -> None:
    out, _, _ = atlas
    page = _parse(out / "layers" / "conv1.html")
    card = page.units["unit-0"]
    assert "dead" not in card["classes"]
    # nine projections, each in both curves' sheets, then the patch sheet: all lazy, all files
    # of the unit, drawn by whole factors (the sizes are CSS variables, no width attribute)
    srcs = [img["src"] for img in card["imgs"]]
    assert srcs == (["../tiles/conv1/u0-deconvnet-linear.webp",
                     "../tiles/conv1/u0-deconvnet-lifted.webp"] * 9
                    + ["../tiles/conv1/u0-patches.jpg"])
    assert all(img["loading"] == "lazy" and img.get("width") is None for img in card["imgs"])
    # 30 % of its top images is no dominant class: the card says so instead of naming one
    assert "mixed" in card["text"] and "tabby cat" not in card["text"] and "3.25" in card["text"]
    assert "goldfish" in _parse(out / "layers" / "conv2.html").units["unit-1"]["text"]
    assert "3 of 9 images" in page.units["unit-2"]["text"]
    assert "1,250" in page.units["unit-3"]["text"]


def test_layer_pages_link_prev_and_next(atlas) -> None:
    out, context, _ = atlas
    labels = [layer.label for layer in context.layers]
    for i, label in enumerate(labels):
        page = (out / "layers" / f"{label}.html").read_text(encoding="utf-8")
        if i > 0:
            assert f'rel="prev" href="../layers/{labels[i - 1]}.html"' in page
        else:
            assert 'rel="prev"' not in page
        if i + 1 < len(labels):
            assert f'rel="next" href="../layers/{labels[i + 1]}.html"' in page
        else:
            assert 'rel="next"' not in page
        assert 'href="../index.html"' in page


def test_index_summarises_model_and_layers(atlas) -> None:
    out, context, _ = atlas
    page = _parse(out / "index.html")
    text = " ".join(" ".join(page.text).split())
    for expected in ("Tiny-10", "50.0 %", "91.0 %", "deconvnet, top 9", "features.relu2"):
        assert expected in text
    assert "Validation accuracy" not in text  # None: not shown
    hrefs = {url for _, url in page.links}
    assert {f"layers/{layer.label}.html" for layer in context.layers} <= hrefs
    srcs = [img["src"] for img in page.imgs if not img["src"].startswith("assets/")]
    # pictures first: a strip per layer of its live units, most selective first (units with
    # all their top images, then named classes, then by share); before the model card
    shown = list(dict.fromkeys(src for src in srcs if src.endswith("-patches.jpg")))
    assert shown == ["tiles/conv1/u0-patches.jpg", "tiles/conv1/u3-patches.jpg",
                     "tiles/conv1/u2-patches.jpg", "tiles/conv2/u%201-patches.jpg",
                     "t/fc0-patches.jpg"]
    assert text.index("#2 · " + EVIL) < text.index("Architecture")
    assert "conv1 features.relu1 4 × 55 × 55 7 px 4 1" in text  # conv1: 1 of 4 units dead


def test_rendering_twice_is_stable(atlas, tmp_path) -> None:
    out, context, index = atlas
    before = {p: p.read_bytes() for p in _pages(out)}
    write_atlas(context, out)
    assert {p: p.read_bytes() for p in _pages(out)} == before


def test_environment_is_strict_and_escaping() -> None:
    env = environment()
    assert env.undefined is StrictUndefined
    assert env.autoescape is True


def test_missing_image_is_an_error(tmp_path) -> None:
    context = _context(tmp_path)
    (tmp_path / "tiles" / "conv1" / "u3-patches.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="u3-patches.jpg"):
        write_atlas(context, tmp_path)


@pytest.mark.parametrize("label", ["../evil", "a/b", "", "has space", ".hidden"])
def test_unsafe_label_is_rejected(tmp_path, label: str) -> None:
    context = _context(tmp_path)
    layer = LayerEntry(label, "m", (1, 1, 1), 1, (), None)
    with pytest.raises(ValueError, match="label"):
        write_atlas(AtlasContext(**{**vars(context), "layers": (layer,)}), tmp_path)


@pytest.mark.parametrize("path", ["/etc/passwd.png", "../x.png", "http://cdn.example/x.png"])
def test_non_relative_image_path_is_rejected(tmp_path, path: str) -> None:
    context = _context(tmp_path)
    with pytest.raises(ValueError, match="relative"):
        write_atlas(AtlasContext(**{**vars(context), "filters_image": path}), tmp_path)


def test_duplicate_labels_are_rejected(tmp_path) -> None:
    context = _context(tmp_path)
    twice = (context.layers[0], context.layers[0])
    with pytest.raises(ValueError, match="twice"):
        write_atlas(AtlasContext(**{**vars(context), "layers": twice}), tmp_path)


def test_atlas_without_layers_or_images(tmp_path) -> None:
    context = AtlasContext(
        "Empty", "w", "m", "d", 0, 0, None, None, None, (), None, "2024-01-01", "0", "deconvnet", 9
    )
    index = write_atlas(context, tmp_path / "out")
    text = index.read_text(encoding="utf-8")
    assert "not measured" in text and "No layers" in text

"""``python -m pipeline compare`` end to end: two finished runs, one shareable site."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse
from urllib.request import urlopen

import numpy as np
import pandas as pd
import pytest
import torch
from compare_runs import EVIL, EVIL_RUN, seed_workflow, write
from PIL import Image
from support import run_cli

PAGES = ("index.html", "second-layer.html")


class Links(HTMLParser):
    """Every href and src of a page, and the filter grids' sources."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.filter_grids: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        self.urls.extend(attrs[name] for name in ("href", "src") if attrs.get(name))
        if tag == "img" and "compare-filters" in (attrs.get("class") or "").split():
            self.filter_grids.append(attrs["src"])


def links(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_every_href_and_src_resolves_from_disk_and_under_a_url_prefix(site, served):
    checked: dict[str, int] = {}
    for name in PAGES:
        page = site / name
        for link in links(page).urls:
            target = urlparse(urldefrag(urljoin(page.as_uri(), link))[0])
            assert target.scheme == "file", f"{name}: {link} is not relative"
            file = Path(unquote(target.path))
            assert file.is_file() and file.is_relative_to(site), f"{name}: {link} is missing"
            url, _ = urldefrag(urljoin(served + name, link))
            assert url.startswith(served), f"{name}: {link} leaves the site"
            if url not in checked:
                with urlopen(url) as response:
                    checked[url] = response.status
    assert set(checked.values()) == {200}
    assert len(checked) > 2 * len(PAGES) + 24  # pages, styles, grids and tiles


def test_pages_load_every_image_without_errors_from_disk_and_a_server(site, served, watch):
    for prefix in (site.as_uri() + "/", served):
        watched = watch(prefix)
        counts = []
        for name in PAGES:
            watched.open(prefix + name)
            counts.append(watched.load_every_image())
        # index: two filter grids and three units of each run; second layer: 24 units each
        assert counts[0] >= 2 + 6 and counts[1] >= 2 * 24, (prefix, counts)
        assert watched.problems == [] and watched.blocked == [], prefix


def test_phone_width_has_no_horizontal_scroll_light_and_dark(browser, site):
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                      color_scheme=scheme)
        page = context.new_page()
        for name in PAGES:
            page.goto((site / name).as_uri())
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{name} ({scheme}) is {width}px wide on a 390px screen"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == ("rgb(19, 19, 22)" if scheme == "dark" else "rgb(246, 246, 243)")
        context.close()


def test_first_layer_grids_are_each_runs_own_filters_and_differ(seed_runs, site):
    from pipeline.atlas.tiles import filter_grid

    grids = links(site / "index.html").filter_grids
    assert grids == ["a/filters.png", "b/filters.png"]
    shown = [np.asarray(Image.open(site / grid).convert("RGB")) for grid in grids]
    for picture, run in zip(shown, ("seed1", "seed2"), strict=True):
        weights = torch.load(seed_runs / "runs" / run / "model.pt",
                             weights_only=True)["features.conv1.weight"].numpy()
        expected = np.asarray(filter_grid(weights, scale=32 // weights.shape[-1]))
        np.testing.assert_array_equal(picture, expected)
    assert shown[0].shape == shown[1].shape and not np.array_equal(shown[0], shown[1])


def test_dead_units_and_selectivity_tables_hold_each_runs_numbers(seed_runs, site, watch):
    watched = watch(site.as_uri())
    watched.open((site / "index.html").as_uri())
    tables = watched.page.locator(".compare-stats table")
    dead = tables.nth(0).locator("tbody tr").all_inner_texts()
    selectivity = tables.nth(1).locator("tbody tr").all_inner_texts()
    for side, run in ((1, "seed1"), (2, "seed2")):
        units = pd.read_parquet(seed_runs / "runs" / run / "units.parquet")
        for number, (label, rows) in enumerate(units.groupby("layer", sort=False)):
            cells = dead[number].split("\t")
            assert cells[0] == label
            assert cells[side].startswith(f"{int(rows['dead'].sum())} of {len(rows)} (")
            share = rows.loc[~rows["dead"], "top_class_share"].mean()
            shown = selectivity[number].split("\t")[side].strip()
            assert shown.endswith(" %") and abs(float(shown[:-2]) - 100 * share) < 0.051


def test_second_layer_shows_each_runs_most_selective_units_first(seed_runs, site, watch):
    import zarr

    from pipeline.atlas.tiles import tile_cells, tile_scale

    watched = watch(site.as_uri())
    watched.open((site / "second-layer.html").as_uri())
    for side, run in (("a", "seed1"), ("b", "seed2")):
        shown = watched.page.locator(f".compare-unit[id^='{side}-']").evaluate_all(
            "cards => cards.map(card => +card.id.split('-')[1])")
        units = pd.read_parquet(seed_runs / "runs" / run / "units.parquet")
        live = units[(units["layer"] == "conv2") & ~units["dead"]].set_index("unit")
        assert len(shown) == min(24, len(live)) and set(shown) <= set(live.index)
        # the demo's units all have nine top images and none is dominated by one class, so the
        # atlas's order is by the share of the top class, then by peak
        assert (live["n_top"] >= 9).all() and (live["top_class_share"] < 0.5).all()
        key = [(-live.at[u, "top_class_share"], -live.at[u, "peak"], u) for u in live.index]
        assert shown == [unit for *_, unit in sorted(key)][:len(shown)]
        # each tile is that unit's: its first patch cell is the unit's top patch, enlarged
        patches = zarr.open_group(seed_runs / "runs" / run / "projections.zarr",
                                  mode="r")["conv2"]["patches"]
        top = np.asarray(patches[shown[0], 0])
        scale = tile_scale(top.shape[0])
        _, _, cells = tile_cells(9, top.shape[:2], scale)
        x, y, w, h = cells[0]
        tile = np.asarray(Image.open(site / side / "tiles" / "conv2" / f"{shown[0]:04d}.webp"))
        np.testing.assert_array_equal(tile[y:y + h, x:x + w],
                                      top.repeat(scale, axis=0).repeat(scale, axis=1))


@pytest.mark.slow
def test_refuses_a_single_workflow_or_three_as_usage_errors(seed_runs):
    one = run_cli("compare", "-w", "workflows/seed1.toml", cwd=seed_runs)
    three = run_cli("compare", "-w", "workflows/seed1.toml", "-w", "workflows/seed2.toml",
                    "-w", "workflows/seed1.toml", cwd=seed_runs)
    for result, count in ((one, 1), (three, 3)):
        assert result.returncode == 2
        assert "usage: python -m pipeline compare" in result.stderr
        assert f"give exactly two workflows (-w A.toml -w B.toml), got {count}" in result.stderr


@pytest.mark.slow
def test_refuses_unfinished_stale_and_identical_runs_in_one_line(seed_runs):
    write(seed_runs, "unrun", seed_workflow(3))
    # the same run folder as seed1, with another top_k: its ranking is stale
    changed = seed_workflow(1).replace("top_k = 9", "top_k = 4")
    write(seed_runs, "changed", 'name = "seed1"\n' + changed)
    cases = {"workflows/unrun.toml": "stage rank is missing",
             "workflows/changed.toml": "stage rank is stale"}
    for workflow, state in cases.items():
        result = run_cli("compare", "-w", "workflows/seed2.toml", "-w", workflow, cwd=seed_runs)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {workflow}: "), lines
        assert state in lines[0] and f"run all -w {workflow}" in lines[0]
    same = run_cli("compare", "-w", "workflows/seed1.toml", "-w", "workflows/changed.toml",
                   cwd=seed_runs)
    assert same.returncode == 2 and "are the same run (runs/seed1)" in same.stderr
    assert len(same.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_replaces_its_own_site_but_never_another_folder(seed_runs, tmp_path):
    args = ("compare", "-w", "workflows/seed1.toml", "-w", "workflows/seed2.toml", "-o")
    out = tmp_path / "site"
    assert run_cli(*args, str(out), cwd=seed_runs).returncode == 0
    (out / "left-over.txt").write_text("from an earlier comparison")
    assert run_cli(*args, str(out), cwd=seed_runs).returncode == 0
    assert (out / "index.html").is_file() and not (out / "left-over.txt").exists()

    mine = tmp_path / "my notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = run_cli(*args, str(mine), cwd=seed_runs)
    assert result.returncode == 2 and "is not a comparison site" in result.stderr
    assert [path.name for path in mine.iterdir()] == ["notes.txt"]


# -- a site that is shared: escaped names, no local paths ----------------------------------------

def evil_files(base: Path) -> list[Path]:
    return [path for path in (base / "reports" / "evil").rglob("*") if path.is_file()]


def escaped(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&#34;").replace("'", "&#39;")


def test_class_and_run_names_are_escaped(evil_runs):
    pages = [path for path in evil_files(evil_runs) if path.suffix == ".html"]
    assert sorted(page.name for page in pages) == sorted(PAGES)
    evil_class = EVIL.replace("/", "")
    counts = {evil_class: 0, EVIL_RUN: 0}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<b>run" not in text, page
        for name in counts:
            assert name not in text, page
            counts[name] += text.count(escaped(name))
    assert all(counts.values()), counts  # both names are on the pages, escaped


def test_no_file_holds_an_absolute_local_path(evil_runs):
    secrets = {str(evil_runs), str(evil_runs / "my data"), str(evil_runs / "runs"),
               str(evil_runs / "weights"), str(evil_runs.resolve()), str(Path.home())}
    files = evil_files(evil_runs)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"{path.name} contains {secret}"
    assert len(files) > 10

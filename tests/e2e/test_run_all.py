"""End to end: ``run all`` on a reduced demo, reruns, single-stage reruns and staleness."""

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from support import run_cli

from pipeline.stages import list_stages

WORKFLOW = ("-w", "workflows/tiny.toml")
STAGES = [stage.name for stage in list_stages()]  # the demo runs every stage


def _states(base: Path) -> dict[str, str]:
    result = run_cli("status", *WORKFLOW, cwd=base)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    return {row[0]: row[1] for row in rows if row and row[0] in STAGES}


def _ran(stdout: str) -> list[str]:
    return re.findall(r"^\[(\w+)\] running", stdout, flags=re.MULTILINE)


@pytest.mark.slow
def test_run_all_builds_every_output(tiny_run):
    run = tiny_run / "runs" / "tiny"
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert list(manifest.columns[:3]) == ["image_id", "path", "label"]
    assert len(manifest) == 12 * len(pd.read_parquet(run / "classes.parquet"))
    store = zarr.open_group(run / "activations.zarr", mode="r")
    assert store.attrs["layers"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert store["conv1/max"].shape[0] == len(manifest)
    topk = pd.read_parquet(run / "topk.parquet")
    assert set(topk.columns) >= {"layer", "unit", "rank", "image_id", "value", "y", "x"}
    assert (topk["value"] > 0).all() and topk.groupby(["layer", "unit"]).size().max() <= 9
    assert _states(tiny_run) == dict.fromkeys(STAGES, "done")


def test_topk_is_the_true_top_of_the_store(tiny_run):
    run = tiny_run / "runs" / "tiny"
    store = zarr.open_group(run / "activations.zarr", mode="r")
    topk = pd.read_parquet(run / "topk.parquet")
    maxes = np.asarray(store["conv3/max"][:])
    for unit in range(maxes.shape[1]):
        rows = topk[(topk.layer == "conv3") & (topk.unit == unit)].sort_values("rank")
        order = np.lexsort((np.arange(len(maxes)), -maxes[:, unit]))
        expected = [i for i in order[:9] if maxes[i, unit] > 0]
        assert rows["image_id"].tolist() == expected


def test_atlas_has_every_layer_and_unit(tiny_run):
    report = tiny_run / "reports" / "tiny"
    units = pd.read_parquet(tiny_run / "runs" / "tiny" / "units.parquet")
    assert (report / "index.html").is_file()
    for layer, group in units.groupby("layer"):
        page = (report / "layers" / f"{layer}.html").read_text(encoding="utf-8")
        live = group[~group["dead"]]
        for unit in live["unit"]:
            assert re.search(rf'src="\.\./tiles/{layer}/{unit:04d}-patches\.jpg"', page), unit
        assert page.count("<img") >= len(live)
        for unit in group["unit"]:  # every unit, dead or alive, has its permalink page
            assert f'href="../units/{layer}/{unit}.html"' in page
            assert (report / "units" / layer / f"{unit}.html").is_file()
    links = _links(report / "index.html")
    assert all(not link.startswith(("/", "http:", "https:", "file:")) for link in links)


@pytest.mark.slow
def test_second_run_is_all_up_to_date(tiny_run):
    result = run_cli("run", "all", *WORKFLOW, cwd=tiny_run)
    assert result.returncode == 0, result.stderr
    assert _ran(result.stdout) == []
    assert result.stdout.count("up to date") == len(STAGES)
    assert "reports/tiny/index.html" in result.stdout


@pytest.mark.slow
def test_single_stage_rerun_with_the_same_outputs_keeps_downstream_done(tiny_run):
    """Stamps are by content: rank reruns, writes the same tables, and nothing after it is
    stale (tests/runner/test_stamps.py covers reruns whose outputs change)."""
    result = run_cli("run", "rank", *WORKFLOW, cwd=tiny_run)
    assert result.returncode == 0, result.stderr
    assert _ran(result.stdout) == ["rank"]
    assert "now stale" not in result.stdout
    assert _states(tiny_run) == dict.fromkeys(STAGES, "done")
    result = run_cli("run", "all", *WORKFLOW, cwd=tiny_run)
    assert _ran(result.stdout) == []


def _links(page: Path) -> list[str]:
    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links = []

        def handle_starttag(self, tag, attrs):
            self.links += [value for key, value in attrs if key in ("href", "src") and value]

    parser = Collect()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links

"""Take the README's screenshots from the demo's atlas (run `python -m pipeline run all` first).

    python docs/screenshots.py    # docs/atlas-{index,layer,unit,featurevis}.png and the pages
                                  # beyond Figure 2: atlas-{occlusion,evolution,invariance}.png

The unit shown is conv3's most class-selective unit with a full set of top images (the demo's
numbering can change when its training does), with its activation maps over the images.
"""

from pathlib import Path

import pandas as pd
import zarr
from playwright.sync_api import sync_playwright

ATLAS = Path("reports/demo")
RUN = Path("runs/demo")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def selective_unit(layer: str) -> int:
    """The layer's unit with the largest top-class share among those with all top images."""
    units = pd.read_parquet(RUN / "units.parquet").query("layer == @layer and not dead")
    full = units[units["n_top"] == units["n_top"].max()]
    return int(full.sort_values(["top_class_share", "peak"], ascending=False)["unit"].iloc[0])


def occluded_image() -> int:
    """The first occluded image whose most probable class changes under the square somewhere
    (the point of Figure 7), else the first."""
    store = zarr.open_group(RUN / "occlusion.zarr", mode="r")
    ids = store["image"][:].tolist()
    labels, predicted = store["label"][:], store["predicted"][:]
    changing = [i for i in range(len(ids)) if (predicted[i] != labels[i]).any()]
    return int(ids[changing[0] if changing else 0])


SHOTS = {
    "atlas-index.png": "index.html",
    "atlas-layer.png": "layers/conv3.html",
    "atlas-unit.png": f"units/conv3/{selective_unit('conv3')}.html",
    # the layer's tiles with each unit's optimised input in place of its projections
    "atlas-featurevis.png": f"layers/conv5.html#unit-{selective_unit('conv5')}&tiles=optimised",
    "atlas-occlusion.png": f"occlusion/{occluded_image()}.html",
    "atlas-evolution.png": "evolution/conv3.html",
    "atlas-invariance.png": "invariance.html",
}

with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    for name, page_path in SHOTS.items():
        # a unit page opens with what it wants: tall enough to show its top images below
        page.set_viewport_size({"width": 1280, "height": 1500 if name == "atlas-unit.png"
                                else 900})
        path, _, anchor = page_path.partition("#")
        page.goto((ATLAS / path).resolve().as_uri() + (f"#{anchor}" if anchor else ""))
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(500)  # lazy images in view decode after the network is idle
        page.screenshot(path=Path(__file__).parent / name)
        print(Path(__file__).parent / name)
    browser.close()

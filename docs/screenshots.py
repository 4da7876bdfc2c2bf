"""Take the README's screenshots from the demo's atlas (run `python -m pipeline run all` first).

    python docs/screenshots.py    # writes docs/atlas-index.png, atlas-layer.png, atlas-unit.png

The unit shown is conv3's most class-selective unit with a full set of top images (the demo's
numbering can change when its training does), with its activation maps over the images.
"""

from pathlib import Path

import pandas as pd
from playwright.sync_api import sync_playwright

ATLAS = Path("reports/demo")
RUN = Path("runs/demo")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def selective_unit(layer: str) -> int:
    """The layer's unit with the largest top-class share among those with all top images."""
    units = pd.read_parquet(RUN / "units.parquet").query("layer == @layer and not dead")
    full = units[units["n_top"] == units["n_top"].max()]
    return int(full.sort_values(["top_class_share", "peak"], ascending=False)["unit"].iloc[0])


SHOTS = {
    "atlas-index.png": "index.html",
    "atlas-layer.png": "layers/conv3.html",
    "atlas-unit.png": f"units/conv3/{selective_unit('conv3')}.html",
}

with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    for name, page_path in SHOTS.items():
        page.goto((ATLAS / page_path).resolve().as_uri())
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(500)  # lazy images in view decode after the network is idle
        page.screenshot(path=Path(__file__).parent / name)
        print(Path(__file__).parent / name)
    browser.close()

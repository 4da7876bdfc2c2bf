"""Take the README's screenshots from the demo's atlas (run `python -m pipeline run all` first).

    python docs/screenshots.py            # writes docs/atlas-layer.png and docs/atlas-unit.png
"""

from pathlib import Path

from playwright.sync_api import sync_playwright

ATLAS = Path("reports/demo")
SHOTS = {"atlas-layer.png": "layers/conv3.html", "atlas-unit.png": "units/conv3/8.html"}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

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

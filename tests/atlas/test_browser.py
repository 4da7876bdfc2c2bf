"""The atlas in a real headless Chromium: from file:// with the network blocked, and under a URL
prefix from a local HTTP server."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin
from urllib.request import urlopen

import pandas as pd
from playwright.sync_api import expect


def test_pages_from_file_urls_load_every_image_without_errors(watched, atlas, tiny_run):
    units = pd.read_parquet(tiny_run / "runs" / "tiny" / "units.parquet")
    live = units[~units["dead"]].iloc[len(units) // 2]
    pages = ["index.html", "layers/conv2.html", f"units/{live['layer']}/{live['unit']}.html"]
    counts = []
    for name in pages:
        watched.open((atlas / name).as_uri())
        counts.append(watched.load_every_image())
    assert counts[0] >= 6 and counts[1] >= 32 and counts[2] >= 3 * int(live["n_top"])
    assert watched.problems == [] and watched.blocked == []
    # the unit page draws the receptive field on every thumbnail, and both SVG charts
    page = watched.page
    assert page.locator(".rf-box").count() == int(live["n_top"])
    assert page.locator(".chart svg rect").count() >= 2


def test_search_finds_a_unit_by_number_and_by_class_name(watched, atlas, tiny_run):
    watched.open((atlas / "index.html").as_uri())
    search = watched.page.locator("#search")
    search.fill("conv3/7")
    search.press("Enter")
    watched.page.wait_for_url("**/units/conv3/7.html")
    assert watched.page.locator("h1").inner_text().replace("\n", "") == "conv3/7"

    # by class name: the unit with the largest share of that class comes first
    run = tiny_run / "runs" / "tiny"
    selectivity = pd.read_parquet(run / "selectivity.parquet")
    classes = pd.read_parquet(run / "classes.parquet").set_index("label")["name"]
    units = pd.read_parquet(run / "units.parquet").set_index(["layer", "unit"])
    name = classes[int(selectivity.groupby("class")["count"].sum().idxmax())]
    share = (selectivity[selectivity["class"] == classes[classes == name].index[0]]
             .set_index(["layer", "unit"])["count"] / units["n_selectivity"]).dropna()
    best = share[share == share.max()].index.sort_values()[0]
    watched.page.locator("#search").fill(name.split("_")[0])
    results = watched.page.locator("#search-results a")
    results.first.wait_for()
    texts = results.all_inner_texts()
    assert f"{best[0]}/{best[1]}" in texts[:5], (name, best, texts[:5])
    assert watched.problems == [] and watched.blocked == []


def test_keyboard_moves_to_the_next_and_previous_unit(watched, atlas):
    page = watched.page

    def press(key: str, then: str) -> None:
        watched.load_every_image()  # leaving a page aborts its pending image loads
        page.keyboard.press(key)
        page.wait_for_url(then)

    watched.open((atlas / "units" / "conv2" / "5.html").as_uri())
    press("ArrowRight", "**/units/conv2/6.html")
    press("ArrowLeft", "**/units/conv2/5.html")
    # the last unit of a layer leads to the first of the next layer
    watched.open((atlas / "units" / "conv1" / "15.html").as_uri())
    press("ArrowRight", "**/units/conv2/0.html")
    # keys typed into the search box are text, not navigation
    page.locator("#search").press("ArrowRight")
    expect(page).to_have_url(re.compile(r"/units/conv2/0\.html$"))
    assert watched.problems == []


def test_layer_page_sorts_and_hides_dead_units(watched, atlas, tiny_run):
    units = pd.read_parquet(tiny_run / "runs" / "tiny" / "units.parquet")
    layer = units.loc[units["dead"], "layer"].iloc[0]  # a layer with a dead unit
    rows = units[units["layer"] == layer]
    watched.open((atlas / "layers" / f"{layer}.html").as_uri())
    page = watched.page
    page.select_option("#sort", "peak")

    def order() -> list[int]:
        return page.locator("ol.units > li").evaluate_all("els => els.map(e => +e.dataset.unit)")

    expected = rows.sort_values(["peak", "unit"], ascending=[False, True])["unit"].tolist()
    watched.until(lambda: order() == expected)  # the page sorts on the hashchange event
    assert order() == expected
    dead = page.locator("ol.units > li.dead")
    expect(dead).to_have_count(int(rows["dead"].sum()))
    expect(dead.first).to_be_visible()
    page.check("#hide-dead")
    expect(dead.first).to_be_hidden()
    assert watched.problems == []


def test_phone_width_has_no_horizontal_scroll(browser, atlas):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  color_scheme="dark")
    page = context.new_page()
    for name in ("index.html", "layers/conv3.html", "units/conv3/1.html"):
        page.goto((atlas / name).as_uri())
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} is {width}px wide on a 390px screen"
    # the dark theme follows the system setting
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(19, 19, 22)"
    context.close()


# -- under a URL prefix, from a real HTTP server -----------------------------------------------

class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.urls.append(value)


def test_every_href_and_src_resolves_under_a_url_prefix(served, atlas):
    pages = sorted(path.relative_to(atlas).as_posix() for path in atlas.rglob("*.html"))
    checked: dict[str, int] = {}
    for name in pages:
        url = served + name
        with urlopen(url) as response:
            parser = Links()
            parser.feed(response.read().decode("utf-8"))
        for link in parser.urls:
            target, _ = urldefrag(urljoin(url, link))
            assert target.startswith(served), f"{name}: {link} leaves the atlas"
            if target not in checked:
                with urlopen(target) as response:
                    checked[target] = response.status
    assert set(checked.values()) == {200}
    assert len(checked) > len(pages)  # pages, images, styles and scripts


def test_search_and_images_work_under_a_url_prefix(watch, served):
    watched = watch(served)
    watched.open(served + "layers/conv2.html")
    assert watched.load_every_image() >= 32
    watched.page.locator("#search").fill("conv4/3")
    watched.page.locator("#search").press("Enter")
    watched.page.wait_for_url(served + "units/conv4/3.html")
    assert watched.load_every_image() > 0
    assert watched.problems == [] and watched.blocked == []

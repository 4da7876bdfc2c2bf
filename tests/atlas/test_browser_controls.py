"""Search, layer controls and polish of the atlas in a real headless Chromium: from file:// with
the network blocked, the key ones also under a URL prefix (fixtures in conftest.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.request import urlopen

import pytest
from playwright.sync_api import expect

from pipeline.atlas.render import read_search_index

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1440, "height": 900}}


@pytest.fixture
def index(atlas) -> dict:
    """The search index the pages load (assets/search-index.js), read as the atlas writes it."""
    return read_search_index(atlas / "assets" / "search-index.js")


def class_results(index: dict, names: set[str]) -> list[str]:
    """"layer/unit" of the units a search for exactly these classes lists, best first."""
    labels = {index["classes"].index(name) for name in names}
    found = []
    for row in index["units"]:
        n, counts = row["n_selectivity"], row["class_counts"]
        hits = sum(counts[i + 1] for i in range(0, len(counts), 2) if counts[i] in labels)
        if n and hits:
            found.append((-hits / n, index["layers"][row["layer"]], row["unit"]))
    mostly = [f for f in found if -f[0] >= 0.5]
    return [f"{layer}/{unit}" for _, layer, unit in sorted(mostly or found)]


ANY = re.compile(".*")  # not_to_have_attribute(name, ANY): the page has no such attribute


def type_query(page, query: str) -> list[str]:
    """Type a query into the search box; return the texts of the result links."""
    page.locator("#search").fill(query)
    page.wait_for_function(
        "q => document.getElementById('search').value === q && "
        "!document.getElementById('search-results').hidden && "
        "document.getElementById('search-status').textContent !== ''", arg=query)
    return page.locator("#search-results a").all_inner_texts()


def option_ids(page) -> list[str]:
    return page.locator('#search-results [role="option"]:not([aria-disabled])').evaluate_all(
        "els => els.map(e => e.id)")


def js_round(x: float) -> int:
    return math.floor(x + 0.5)


# -- search ----------------------------------------------------------------------------------

def test_search_box_is_a_combobox_with_a_listbox_and_a_live_count(watched, atlas, index):
    page = watched.page
    watched.open((atlas / "layers" / "conv3.html").as_uri())
    box = page.locator("#search")
    assert box.get_attribute("role") == "combobox"
    assert box.get_attribute("aria-controls") == "search-results"
    assert box.get_attribute("aria-expanded") == "false"
    assert page.locator("#search-results").get_attribute("role") == "listbox"
    status = page.locator("#search-status")
    assert status.get_attribute("aria-live") == "polite"
    assert status.get_attribute("role") == "status"

    texts = type_query(page, "ring")
    expected = class_results(index, {"ring"})
    assert len(expected) > 30  # cut at the limit
    assert texts == expected[:30]
    assert box.get_attribute("aria-expanded") == "true"
    ids = option_ids(page)
    assert len(ids) == 30 and len(set(ids)) == 30 and all(ids)
    # the cut is said, as a last item that is not a link, and announced
    more = len(expected) - 30
    last = page.locator("#search-results li").last
    assert last.inner_text() == f"{more} more — refine the search"
    assert last.locator("a").count() == 0 and last.get_attribute("aria-disabled") == "true"
    assert status.inner_text() == f"30 results, {more} more"
    type_query(page, "conv3/7")
    assert status.inner_text() == "1 result"
    type_query(page, "zebra")
    assert status.inner_text() == "no unit or class matches"
    assert page.locator("#search-results a").count() == 0
    assert watched.problems == [] and watched.blocked == []


def test_search_keyboard_moves_through_results_and_enter_opens_one(watched, atlas, index):
    page = watched.page
    watched.open((atlas / "index.html").as_uri())
    box = page.locator("#search")
    texts = type_query(page, "blue disc")
    ids = option_ids(page)
    assert box.get_attribute("aria-activedescendant") is None

    box.press("ArrowDown")  # enters the results
    expect(box).to_have_attribute("aria-activedescendant", ids[0])
    expect(page.locator(f"#{ids[0]}")).to_have_attribute("aria-selected", "true")
    box.press("ArrowDown")
    expect(box).to_have_attribute("aria-activedescendant", ids[1])
    expect(page.locator(f"#{ids[0]}")).to_have_attribute("aria-selected", "false")
    box.press("ArrowUp")
    box.press("ArrowUp")  # wraps to the last
    expect(box).to_have_attribute("aria-activedescendant", ids[-1])
    box.press("ArrowDown")  # and back to the first
    expect(box).to_have_attribute("aria-activedescendant", ids[0])
    box.press("ArrowDown")
    expect(box).to_be_focused()  # the focus stays in the box
    box.press("Enter")
    layer, unit = texts[1].split("/")
    page.wait_for_url(f"**/units/{layer}/{unit}.html")

    # Enter with nothing highlighted opens the first result
    type_query(page, "red_disc")
    first = page.locator("#search-results a").first.inner_text()
    page.locator("#search").press("Enter")
    page.wait_for_url("**/units/{}/{}.html".format(*first.split("/")))
    assert first == class_results(index, {"red_disc"})[0]
    assert watched.problems == [] and watched.blocked == []


def test_search_results_close_on_escape_and_outside_click_or_tap(watch, atlas):
    for options in (DESKTOP, PHONE):
        watched = watch(atlas.as_uri(), **options)
        page = watched.page
        watched.open((atlas / "layers" / "conv2.html").as_uri())
        results = page.locator("#search-results")
        box = page.locator("#search")
        type_query(page, "cross")
        expect(results).to_be_visible()
        box.press("Escape")
        expect(results).to_be_hidden()
        expect(box).to_have_attribute("aria-expanded", "false")
        expect(box).to_have_value("cross")  # the first Escape only closes the list
        box.press("ArrowDown")  # reopens it
        page.wait_for_function("!document.getElementById('search-results').hidden")
        # a click (or a tap on a phone) inside the search keeps it, anywhere else closes it
        inside = box.bounding_box()
        page.mouse.click(inside["x"] + 5, inside["y"] + 5)
        expect(results).to_be_visible()
        if options is PHONE:
            page.tap("h1")
        else:
            page.locator("h1").click()
        expect(results).to_be_hidden()
        expect(box).to_have_attribute("aria-expanded", "false")
        expect(box).not_to_have_attribute("aria-activedescendant", ANY)
        assert watched.problems == [] and watched.blocked == []


@pytest.mark.parametrize("query, classes", [
    ("blue disc", {"blue_disc"}),
    ("blue_disc", {"blue_disc"}),
    ("Blue-Disc", {"blue_disc"}),
    ("  BLUE   disc ", {"blue_disc"}),
    ("bluedisc", {"blue_disc"}),
    ("discs", {"blue_disc", "red_disc"}),
    ("ring", {"ring"}),
    ("rings", {"ring"}),
    ("stripe", {"horizontal_stripes", "vertical_stripes", "diagonal_stripes",
                "antidiagonal_stripes"}),
    ("horizontal stripe", {"horizontal_stripes"}),
    ("crosses", {"cross"}),
])
def test_class_search_ignores_case_separators_and_plurals(watched, atlas, index, query, classes):
    page = watched.page
    watched.open((atlas / "index.html").as_uri())
    texts = type_query(page, query)
    assert texts == class_results(index, classes)[:30]
    note = page.locator("#search-results li .muted").first.inner_text()
    what = next(iter(classes)) if len(classes) == 1 else f"{len(classes)} classes"
    assert re.fullmatch(rf"\s?\d+ % {what}( · top: \w+)?", note), note
    assert watched.problems == []


def test_every_word_of_a_class_query_must_match(watched, atlas):
    watched.open((atlas / "index.html").as_uri())
    for query in ("blue ring", "disc stripes", "red blue"):
        assert type_query(watched.page, query) == [], query
        assert watched.page.locator("#search-results .none").inner_text() == \
            "no unit or class matches"


def test_unit_numbers_use_the_current_layer(watched, atlas, index):
    page = watched.page
    sizes = dict(zip(index["layers"], index["sizes"], strict=True))
    # on a layer page, "7" and "#7" are that layer's unit 7
    watched.open((atlas / "layers" / "conv3.html").as_uri())
    assert page.locator("body").get_attribute("data-layer") == "conv3"
    assert type_query(page, "7") == ["conv3/7"]
    assert type_query(page, "# 12") == ["conv3/12"]
    assert type_query(page, "99") == []
    assert page.locator("#search-results .none").inner_text() == \
        f"conv3 has units 0–{sizes['conv3'] - 1}"
    page.locator("#search").fill("#7")
    page.locator("#search").press("Enter")
    page.wait_for_url("**/units/conv3/7.html")
    # on a unit page, its layer
    assert page.locator("body").get_attribute("data-layer") == "conv3"
    assert type_query(page, "20") == ["conv3/20"]
    # layer and number work on every page, whatever the separator
    for query in ("conv2/5", "conv2 5", "conv2#5", "CONV2 #5", "conv2:5"):
        assert type_query(page, query) == ["conv2/5"], query
    # on the index, a number alone lists that unit of every layer that has it
    watched.open((atlas / "index.html").as_uri())
    assert page.locator("body").get_attribute("data-layer") is None
    assert type_query(page, "7") == [f"{layer}/7" for layer in index["layers"]]
    assert type_query(page, "40") == [f"{layer}/40" for layer in index["layers"]
                                      if sizes[layer] > 40]
    assert 0 < len(type_query(page, "40")) < len(index["layers"])
    assert watched.problems == [] and watched.blocked == []


def test_search_by_class_unit_number_and_keys_under_a_url_prefix(watch, served, index):
    watched = watch(served)
    page = watched.page
    watched.open(served + "layers/conv2.html")
    page.locator("#search").fill("#7")
    page.locator("#search").press("Enter")
    page.wait_for_url(served + "units/conv2/7.html")
    texts = type_query(page, "Blue Discs")
    assert texts == class_results(index, {"blue_disc"})[:30]
    page.locator("#search").press("ArrowDown")
    page.locator("#search").press("ArrowDown")
    page.locator("#search").press("Enter")
    page.wait_for_url(served + "units/{}/{}.html".format(*texts[1].split("/")))
    assert watched.problems == [] and watched.blocked == []


# -- layer page controls ---------------------------------------------------------------------

def test_layer_controls_are_hidden_without_javascript(browser, atlas):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto((atlas / "layers" / "conv4.html").as_uri())
        assert page.locator(".controls").count() == 1
        expect(page.locator(".controls")).to_be_hidden()
        assert page.evaluate("getComputedStyle(document.querySelector('.controls')).display") \
            == "none"
        assert page.locator(".unit-head .peak").first.inner_text().startswith("peak ")
    finally:
        context.close()


def test_layer_controls_show_with_javascript_and_hide_dead_only_with_dead_units(watched, atlas):
    page = watched.page
    watched.open((atlas / "layers" / "conv4.html").as_uri())
    dead = page.locator("ol.units > li.dead").count()
    assert dead > 0
    expect(page.locator(".controls")).to_be_visible()
    assert page.locator("label:has(#hide-dead)").inner_text().strip() == \
        f"hide dead units ({dead})"
    watched.open((atlas / "layers" / "conv3.html").as_uri())
    assert page.locator("ol.units > li.dead").count() == 0
    expect(page.locator(".controls")).to_be_visible()
    assert page.locator("#hide-dead").count() == 0
    page.select_option("#sort", "peak")  # works without the checkbox
    expect(page).to_have_url(re.compile(r"#sort=peak$"))
    assert watched.problems == []


def unit_order(page) -> list[int]:
    return page.locator("ol.units > li").evaluate_all("els => els.map(e => +e.dataset.unit)")


def cards(page) -> list[dict]:
    return page.locator("ol.units > li").evaluate_all("""els => els.map(e => ({
        unit: +e.dataset.unit, peak: +e.dataset.peak, selectivity: +e.dataset.selectivity,
        sparsity: +e.dataset.sparsity, dead: e.classList.contains('dead'),
        text: e.querySelector('.peak').textContent, visible: e.offsetParent !== null}))""")


def test_sort_and_hide_dead_live_in_the_hash_through_reload_and_history(watched, atlas):
    page = watched.page
    url = (atlas / "layers" / "conv4.html").as_uri()
    watched.open(url)
    by_unit = unit_order(page)
    assert by_unit == sorted(by_unit)
    state = cards(page)
    by_sparsity = [c["unit"] for c in sorted(state, key=lambda c: (c["dead"], c["sparsity"],
                                                                   c["unit"]))]
    by_peak = [c["unit"] for c in sorted(state, key=lambda c: (-c["peak"], c["unit"]))]
    dead = page.locator("ol.units > li.dead").first

    sort, hide = page.locator("#sort"), page.locator("#hide-dead")

    def in_order(units: list[int]) -> None:
        # the page applies the hash on the hashchange event, after the action that set it
        watched.until(lambda: unit_order(page) == units)
        assert unit_order(page) == units

    page.select_option("#sort", "sparsity")
    expect(page).to_have_url(url + "#sort=sparsity")
    in_order(by_sparsity)
    page.check("#hide-dead")
    expect(page).to_have_url(url + "#sort=sparsity&hide-dead=1")
    expect(dead).to_be_hidden()

    page.reload()
    page.wait_for_load_state("load")
    expect(sort).to_have_value("sparsity")
    expect(hide).to_be_checked()
    expect(dead).to_be_hidden()
    in_order(by_sparsity)

    page.go_back()  # before hiding the dead units
    page.wait_for_function("location.hash === '#sort=sparsity'")
    expect(hide).not_to_be_checked()
    expect(dead).to_be_visible()
    in_order(by_sparsity)
    page.go_back()  # the page as opened
    page.wait_for_function("location.hash === ''")
    expect(sort).to_have_value("unit")
    in_order(by_unit)
    page.go_forward()
    page.wait_for_function("location.hash === '#sort=sparsity'")
    expect(sort).to_have_value("sparsity")
    in_order(by_sparsity)

    # a link with the state opens the page in that state (the same document: a hashchange)
    watched.open(url + "#sort=peak&hide-dead=1")
    expect(sort).to_have_value("peak")
    in_order(by_peak)
    expect(hide).to_be_checked()
    expect(dead).to_be_hidden()
    assert watched.problems == []


def test_unit_anchor_from_a_unit_page_still_targets_its_card(watched, atlas):
    page = watched.page
    watched.open((atlas / "units" / "conv3" / "17.html").as_uri())
    watched.follow(page.locator(".pager a", has_text="conv3: all units").first)
    page.wait_for_url("**/layers/conv3.html#unit-17")
    page.wait_for_load_state("load")
    assert page.evaluate("document.querySelector(':target').id") == "unit-17"
    assert page.locator("#sort").input_value() == "unit"
    assert unit_order(page) == sorted(unit_order(page))
    box = page.locator("#unit-17").bounding_box()
    header = page.locator("header.site").bounding_box()
    assert header["height"] <= box["y"] < 900  # scrolled to, not under the sticky header
    outline = page.evaluate("getComputedStyle(document.getElementById('unit-17')).outlineStyle")
    assert outline == "solid"
    # sorting leaves the anchor; Back returns to it, in unit order
    page.select_option("#sort", "peak")
    # the page sorts on the hashchange event, after select_option returns
    watched.until(lambda: unit_order(page) != sorted(unit_order(page)))
    assert unit_order(page) != sorted(unit_order(page))
    page.go_back()
    page.wait_for_function("location.hash === '#unit-17'")
    watched.until(lambda: unit_order(page) == sorted(unit_order(page)))
    assert unit_order(page) == sorted(unit_order(page))
    expect(page.locator("#sort")).to_have_value("unit")
    assert watched.problems == []


def test_cards_show_the_value_they_are_sorted_by(watched, atlas):
    page = watched.page
    watched.open((atlas / "layers" / "conv4.html").as_uri())
    before = cards(page)
    assert all(re.fullmatch(r"peak \d[\d.,]*", c["text"]) for c in before)

    def percent(share: float) -> str:
        p = 100 * share
        return f"{p:.1f} %" if 0 < p < 1 else f"{js_round(p)} %"

    def selectivity(c: dict) -> str:
        return "no class" if c["dead"] else f"{percent(c['selectivity'])} one class"

    def sparsity(c: dict) -> str:
        return f"fires in {percent(c['sparsity'])}"

    def texts(state: list[dict]) -> dict[int, str]:
        return {c["unit"]: c["text"] for c in state}

    # the page relabels the cards on the hashchange event, after select_option returns
    page.select_option("#sort", "selectivity")
    watched.until(lambda: all(c["text"] == selectivity(c) for c in cards(page)))
    for c in cards(page):
        assert c["text"] == selectivity(c)
    page.select_option("#sort", "sparsity")
    watched.until(lambda: all(c["text"] == sparsity(c) for c in cards(page)))
    for c in cards(page):
        assert c["text"] == sparsity(c)
    assert any(c["text"] != "fires in 100 %" for c in cards(page))
    page.select_option("#sort", "peak")
    watched.until(lambda: texts(cards(page)) == texts(before))
    assert texts(cards(page)) == texts(before)
    page.select_option("#sort", "unit")
    watched.until(lambda: cards(page) == before)
    assert cards(page) == before
    assert watched.problems == []


# -- polish ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["index.html", "layers/conv3.html", "units/conv3/1.html"])
def test_phone_header_is_at_most_80px_and_usable(watch, atlas, name):
    watched = watch(atlas.as_uri(), **PHONE)
    page = watched.page
    watched.open((atlas / name).as_uri())
    header = page.locator("header.site")
    assert header.bounding_box()["height"] <= 80
    search = page.locator("#search").bounding_box()
    assert search["width"] >= 150 and search["x"] + search["width"] <= 390
    for link in page.locator(".layer-nav a").all()[:3]:
        expect(link).to_be_visible()
    expect(page.locator(".brand")).to_be_visible()
    assert page.locator(".brand").inner_text().strip() != "" or \
        page.locator(".brand-text").text_content().strip()
    page.evaluate("window.scrollTo(0, 2000)")
    assert page.locator("header.site").bounding_box()["y"] == 0  # still sticky
    # the dropdown fits the screen
    type_query(page, "ring")
    drop = page.locator("#search-results").bounding_box()
    assert drop["x"] >= 0 and drop["x"] + drop["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert watched.problems == []


def test_chart_text_has_the_same_size_at_any_width(watch, atlas):
    sizes = {}
    for width in (1440, 1024, 390):
        watched = watch(atlas.as_uri(), viewport={"width": width, "height": 900})
        watched.open((atlas / "units" / "conv3" / "1.html").as_uri())
        measured = watched.page.locator(".chart text").evaluate_all("""els => els.map(t => [
            t.getBoundingClientRect().height,
            parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a])""")
        assert len(measured) >= 4
        for height, font in measured:
            assert 12 <= font <= 13.5 and 12 <= height <= 18, (width, height, font)
        sizes[width] = measured
        # the longest class name stays inside its chart
        overflow = watched.page.evaluate("""() => [...document.querySelectorAll('.chart')]
            .some(c => [...c.querySelectorAll('text')].some(t =>
                t.getBoundingClientRect().right > c.getBoundingClientRect().right))""")
        assert not overflow
    assert sizes[1440] == sizes[390] == sizes[1024]


def test_favicon_is_a_copied_asset_linked_from_every_page(watch, served, atlas):
    assert (atlas / "assets" / "favicon.svg").is_file()
    icon = served + "assets/favicon.svg"
    with urlopen(icon) as response:
        assert response.status == 200 and b"<svg" in response.read()
    watched = watch(served)
    answers: list[tuple[str, int]] = []
    watched.page.on("response", lambda response: answers.append((response.url, response.status)))
    for name in ("index.html", "layers/conv3.html", "units/conv3/1.html"):
        watched.open(served + name)
        href = watched.page.evaluate("document.querySelector('link[rel=icon]').href")
        assert href == icon
    assert (icon, 200) in answers or (icon, 304) in answers  # the browser asked for it
    assert [a for a in answers if a[1] >= 400 or a[0].endswith("/favicon.ico")] == []
    assert watched.blocked == []


CONTRAST = Path(__file__).with_name("contrast.js").read_text(encoding="utf-8")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_at_least_4_5_in_both_themes(watch, atlas, scheme):
    watched = watch(atlas.as_uri(), color_scheme=scheme)
    page = watched.page
    rows = []
    for name in ("index.html", "layers/conv4.html", "units/conv4/3.html"):
        watched.open((atlas / name).as_uri())
        if name.startswith("layers"):
            type_query(page, "ring")  # the dropdown, with a highlighted result
            page.locator("#search").press("ArrowDown")
            expect(page.locator("#search-option-0")).to_have_attribute("aria-selected", "true")
        measured = page.evaluate(CONTRAST)
        assert len(measured) > 50
        rows += [(r["ratio"], name, r["what"], r["fg"], r["bg"]) for r in measured]
    whats = " ".join(r[2] for r in rows)
    for must in ("[aria-current]", "::placeholder", "kbd", "caption", "in .dead",
                 "in #search-option-0", "span.peak", "text.label", "dt"):
        assert must in whats, must  # measured, not skipped
    worst = min(rows)
    assert worst[0] >= 4.5, worst
    assert watched.problems == []

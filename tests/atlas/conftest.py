"""Browser fixtures of the atlas tests: a headless Chromium, pages that record errors and block
the network, and the tiny demo's atlas from file:// or under a URL prefix of a local server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import served_copy

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Watched:
    """A page whose console errors, page errors, failed and non-local requests are recorded."""

    def __init__(self, browser, allowed_prefix: str, **options) -> None:
        options = {"viewport": {"width": 1280, "height": 900}, **options}
        self.context = browser.new_context(service_workers="block", **options)
        self.problems: list[str] = []
        self.blocked: list[str] = []

        def route(route) -> None:
            if route.request.url.startswith(allowed_prefix):
                route.continue_()
            else:
                self.blocked.append(route.request.url)
                route.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error"
                     and self.problems.append(f"console: {message.text}"))
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("requestfailed", self._failed)
        # requests the page has started and not yet finished: leaving a page cancels them
        # (net::ERR_ABORTED), which is no fault of the page, so `open` lets them finish first
        self.in_flight: set = set()
        self.page.on("request", lambda request: self.in_flight.add(request))
        self.page.on("requestfinished", lambda request: self.in_flight.discard(request))

    def _failed(self, request) -> None:
        self.in_flight.discard(request)
        # the browser asks for the tab's icon after the load event; leaving the page at once
        # cancels that, which is no fault of the page
        if request.url.endswith("/favicon.svg") and request.failure == "net::ERR_ABORTED":
            return
        # an image still loading when the page is left (Enter in the search box opens a result
        # while its thumbnails load) is cancelled: no fault of the page; a missing image still
        # fails here with ERR_FILE_NOT_FOUND (file://), and load_every_image checks that every
        # drawn image decodes
        if request.resource_type == "image" and request.failure == "net::ERR_ABORTED":
            return
        self.problems.append(f"failed: {request.url} {request.failure}")

    def settle(self, timeout_ms: int = 20_000) -> None:
        """Wait until every request the page has started is finished or failed."""
        waited = 0
        while self.in_flight and waited < timeout_ms:
            self.page.wait_for_timeout(25)
            waited += 25
        assert not self.in_flight, f"still loading after {timeout_ms} ms: {self.in_flight}"

    def until(self, condition: Callable[[], bool], timeout_ms: int = 5_000) -> None:
        """Wait until ``condition()`` holds, as ``expect(locator)`` waits for a locator's state:
        for a state read with evaluate() that the page may change only after the action returns
        (the layer page sorts on the hashchange event). The caller asserts it then, for a
        readable failure if it never held."""
        waited = 0
        while not condition() and waited < timeout_ms:
            self.page.wait_for_timeout(25)
            waited += 25

    def follow(self, link) -> None:
        """Click ``link`` (a locator that navigates) once the current page's requests are done."""
        self.settle()
        link.click()

    def open(self, url: str) -> None:
        self.settle()
        self.page.goto(url)
        self.page.wait_for_load_state("load")

    #: The images a page draws: a projection's picture for the other display curve is in the
    #: page but not drawn (display: none), and a lazy image that is not drawn is not loaded.
    SHOWN = "[...document.images].filter(i => i.getClientRects().length > 0)"

    def load_every_image(self) -> int:
        """Scroll through the page so lazy images load; return how many images it draws."""
        page = self.page
        height = page.evaluate("document.body.scrollHeight")
        for y in range(0, height + 900, 700):
            page.evaluate(f"window.scrollTo(0, {y})")
            page.wait_for_timeout(30)
        page.wait_for_function(f"{self.SHOWN}.every(i => i.complete && i.naturalWidth > 0)",
                               timeout=20_000)
        return page.evaluate(f"{self.SHOWN}.length")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def atlas(tiny_run) -> Path:
    return tiny_run / "reports" / "tiny"


@pytest.fixture
def watched(browser, atlas) -> Iterator[Watched]:
    page = Watched(browser, atlas.as_uri())
    yield page
    page.close()


@pytest.fixture
def watch(browser) -> Iterator[Callable[..., Watched]]:
    """Open watched pages allowing ``prefix`` (more context options: viewport, color_scheme…);
    they are closed after the test."""
    opened: list[Watched] = []

    def open_watched(prefix: str, **options) -> Watched:
        opened.append(Watched(browser, prefix, **options))
        return opened[-1]

    yield open_watched
    for watched in opened:
        watched.close()


@pytest.fixture
def served(atlas, tmp_path) -> Iterator[str]:
    """The atlas copied to ``/team/atlas/`` of a local HTTP server; yields that URL."""
    with served_copy(atlas, tmp_path / "www", "team/atlas") as url:
        yield url

"""The experiments' entries in every page's header, known before any page is written.

Each experiment (``render_run.ExperimentPages``) names its main page with its module's
``main_page(store_path, context)``, a fixed name (``invariance.html``,
``occlusion/index.html``) or one read from its stage's output without writing anything
(``evolution/<first layer>.html``). Its other pages are reached from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.atlas.context import PageLink

if TYPE_CHECKING:
    from pipeline.atlas.context import AtlasContext
    from pipeline.atlas.render_run import ExperimentPages

#: what the header calls each experiment (short: the header must fit a phone)
NAV_TITLES = {"evolution": "Evolution", "invariance": "Invariance", "occlusion": "Occlusion"}


def experiment_links(experiments: Sequence[tuple[ExperimentPages, Path]],
                     context: AtlasContext) -> tuple[PageLink, ...]:
    """One header link per experiment that is on in the run, in the paper's order; its note
    names the figure."""
    links = []
    for pages, output in experiments:
        main_page, _ = pages.functions()
        title = NAV_TITLES.get(pages.name, pages.name.capitalize())
        links.append(PageLink(title, main_page(Path(output), context),
                              f"Figure {pages.figure}"))
    return tuple(links)



#: words that find an experiment's page in the search box, beside its title
SEARCH_WORDS = {
    "Evolution": "feature evolution training snapshots epochs checkpoints figure 4",
    "Invariance": "invariance transformation translation shift scale scaling rotation rotate "
                  "figure 5",
    "Occlusion": "occlusion occluder grey square sensitivity classifier figure 7",
}


#: The fields of each page's row in the search index, in order (atlas.js: ``PAGE``).
SEARCH_PAGE_FIELDS = ("title", "path", "words")


def search_pages(context: AtlasContext) -> list[list[str]]:
    """The experiments' main pages for the search index, one row of
    :data:`SEARCH_PAGE_FIELDS` each, in the header's order (the search lists them before
    units)."""
    rows = [{"title": f"{link.title} ({link.note})", "path": link.path,
             "words": f"{link.title.lower()} {SEARCH_WORDS.get(link.title, '')}".strip()}
            for link in context.experiment_nav]
    return [[row[field] for field in SEARCH_PAGE_FIELDS] for row in rows]

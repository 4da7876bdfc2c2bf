"""The experiments' entries in every page's header, known before any page is written.

Each experiment module (``pipeline.atlas.<module>``, see ``build.EXPERIMENT_PAGES``) names its
main page with ``main_page(store_path, context)``, a fixed name (``invariance.html``,
``occlusion/index.html``) or one read from its stage's output without writing anything
(``evolution/<first layer>.html``). Its other pages are reached from there.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.atlas.context import PageLink

if TYPE_CHECKING:
    from pipeline.atlas.build import ExperimentPages
    from pipeline.atlas.context import AtlasContext

#: what the header calls each experiment (short: the header must fit a phone)
NAV_TITLES = {"evolution": "Evolution", "invariance": "Invariance", "occlusion": "Occlusion"}


def experiment_links(experiments: Sequence[tuple[ExperimentPages, Path]],
                     context: AtlasContext) -> tuple[PageLink, ...]:
    """One header link per experiment that is on in the run, in the paper's order; its note
    names the figure."""
    links = []
    for pages, output in experiments:
        module = importlib.import_module(f"pipeline.atlas.{pages.module}")
        title = NAV_TITLES.get(pages.stage, pages.stage.capitalize())
        links.append(PageLink(title, module.main_page(Path(output), context),
                              f"Figure {pages.figure}"))
    return tuple(links)



#: words that find an experiment's page in the search box, beside its title
SEARCH_WORDS = {
    "Evolution": "feature evolution training snapshots epochs checkpoints figure 4",
    "Invariance": "invariance transformation translation shift scale scaling rotation rotate "
                  "figure 5",
    "Occlusion": "occlusion occluder grey square sensitivity classifier figure 7",
}


def search_pages(context: AtlasContext) -> list[list[str]]:
    """The experiments' main pages for the search index: ``[title, path, words]`` each, in the
    header's order (the search lists them before units)."""
    return [[f"{link.title} ({link.note})", link.path,
             f"{link.title.lower()} {SEARCH_WORDS.get(link.title, '')}".strip()]
            for link in context.experiment_nav]

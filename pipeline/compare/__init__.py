"""The ``compare`` command: a static site comparing two finished runs (the paper's Figure 6).

:mod:`~pipeline.compare.gather` reads both runs and writes the pictures, :mod:`~pipeline.compare
.site` writes the pages from the frozen :class:`~pipeline.compare.context.Comparison` ("gather,
then render", as the atlas does).
"""

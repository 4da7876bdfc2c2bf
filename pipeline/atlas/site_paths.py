"""Where an atlas's pages live, relative to its root: the one place that names them, so the
renderer and the data files (:mod:`pipeline.atlas.export`) link the same pages."""

ASSETS_DIR = "assets"
LAYERS_DIR = "layers"
UNITS_DIR = "units"


def unit_path(label: str, unit: int) -> str:
    """The unit page's permalink, relative to the atlas root: ``units/conv3/17.html``."""
    return f"{UNITS_DIR}/{label}/{unit}.html"

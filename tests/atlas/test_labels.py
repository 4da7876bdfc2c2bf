"""When a card names a class: it must clearly dominate the unit's top images."""

import pytest

from pipeline.atlas.gather import dominant_class


@pytest.mark.parametrize(("share", "counted", "prior", "named"), [
    (0.55, 100, 0.1, True),     # 10 balanced classes: over half, over 3x chance
    (0.45, 100, 0.1, False),    # not half
    (0.30, 100, 0.1, False),    # 3x chance but not half: "mixed"
    (0.60, 100, 0.25, False),   # a class that is a quarter of the data: needs 75 %
    (0.80, 100, 0.25, True),
    (0.85, 100, 0.5, False),    # two balanced classes: 3x chance is capped at 90 %
    (0.95, 100, 0.5, True),
    (1.00, 3, 0.001, False),    # three images are too few to name anything
    (0.51, 5, 0.001, True),     # ImageNet: half of at least five images
])
def test_a_class_is_named_only_when_it_clearly_dominates(share, counted, prior, named):
    assert dominant_class(share, counted, prior) is named

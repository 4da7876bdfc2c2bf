"""A layer whose windows or cones fail their self-check says so, once, before projecting on the
full image (issue 26: TF32 on a GPU must not switch paths without a word)."""

import torch

from pipeline.device import set_tf32, tf32_allowed
from pipeline.interp.windows import agree, difference, say_disagreement


def test_a_failed_self_check_is_said_once_with_its_size(capsys):
    full = torch.ones(2, 3, 4, 4)
    cropped = full.clone()
    cropped[1, 0, 0, 0] = 1.5
    assert not agree(full, cropped) and difference(full, cropped) == 0.5
    for _ in range(2):
        say_disagreement("conv9", "windows", full, cropped)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("[projector] layer conv9: projections on windows differed from the "
                          "full image's by 5.0e-01 of the peak")
    assert "projecting on the full image" in err


def test_tf32_is_named_only_when_it_is_on(capsys):
    full, cropped = torch.ones(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.9)
    allowed = tf32_allowed()
    try:
        set_tf32(False)
        say_disagreement("conv8", "its cones", full, cropped)
        set_tf32(True)
        say_disagreement("conv8", "windows", full, cropped)
    finally:
        set_tf32(allowed)
    cones, windows = capsys.readouterr().err.splitlines()
    assert "TF32" not in cones and "TF32 is on" in windows


def test_an_all_zero_probe_fails_the_check_without_a_word(capsys):
    full = torch.zeros(1, 3, 2, 2)
    assert not agree(full, full)
    say_disagreement("conv7", "windows", full, full)
    assert capsys.readouterr().err == ""

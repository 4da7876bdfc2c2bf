"""evaluating(): eval mode and no autograd for the block, every module's own mode given back."""

import pytest
import torch
from torch import nn

from pipeline.models.evaluation import blank_image, evaluating


def _mixed() -> nn.Sequential:
    """Training, except a BatchNorm frozen in eval mode (as in fine-tuning)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    model.train()
    model[1].eval()
    return model


def test_the_block_runs_in_eval_mode_without_grad_and_each_mode_comes_back():
    model = _mixed()
    before = [m.training for m in model.modules()]
    x = torch.ones(2, 3, 8, 8)
    with evaluating(model):
        assert not any(m.training for m in model.modules())
        out = model(x)
        assert not out.requires_grad
        assert torch.equal(out, model(x))  # dropout off: the same twice
    assert [m.training for m in model.modules()] == before == [True, True, False, True, True]


def test_grad_keeps_autograd_and_an_error_still_restores_the_modes():
    model = _mixed()
    with pytest.raises(RuntimeError), evaluating(model, grad=True):
        assert model(torch.ones(1, 3, 8, 8)).requires_grad
        raise RuntimeError("the pass failed")
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    assert torch.is_grad_enabled()


def test_a_blank_image_takes_the_models_dtype_and_a_parameterless_model_gets_float32():
    image = blank_image(nn.Conv2d(3, 2, 3).double(), (5, 7))
    assert image.shape == (1, 3, 5, 7) and image.dtype == torch.float64 and not image.any()
    assert blank_image(nn.ReLU(), (2, 2)).dtype == torch.float32

"""The cascade's steps, and new weights that are seeded, per module, and leave no trace."""

from __future__ import annotations

import torch
from conftest import SIZE, tiny_net

from pipeline.sanity.randomise import (
    Cascade,
    cascade_steps,
    forward_order,
    keep_weights,
    reaches,
    reset_weights,
)


def _steps(model):
    order = forward_order(model, torch.zeros(1, 3, SIZE, SIZE), ["1", "4"])
    return order, cascade_steps(order, [("conv1", "1"), ("conv2", "4")])


def test_the_cascade_goes_from_the_top_down_one_analysed_layer_at_a_time():
    order, steps = _steps(tiny_net())
    assert order.weighted == ("0", "3", "6")
    assert order.before == {"1": frozenset({"0"}), "4": frozenset({"0", "3"})}
    assert [(s.index, s.down_to, s.label, sorted(s.modules)) for s in steps] == [
        (1, "3", "conv2", ["3", "6"]), (2, "0", "conv1", ["0", "3", "6"])]
    assert not reaches(steps[0], order, "1") and reaches(steps[0], order, "4")
    # a lowest analysed layer above the first weights: a last step randomises the rest
    only_conv2 = cascade_steps(order, [("conv2", "4")])
    assert [(s.down_to, s.label) for s in only_conv2] == [("3", "conv2"), ("0", "")]


def test_new_weights_depend_on_the_seed_and_module_only_and_leave_the_rng_alone():
    model = tiny_net()
    _, steps = _steps(model)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = Cascade(model, steps, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    again = Cascade(model, steps[-1:], seed=7)  # other steps, same module: same weights
    other = Cascade(model, steps, seed=8)
    conv1 = [c.at(steps[-1]).get_submodule("0").weight.clone() for c in (first, again, other)]
    assert torch.equal(conv1[0], conv1[1]) and not torch.equal(conv1[0], conv1[2])
    assert not torch.equal(conv1[0], model.get_submodule("0").weight)
    # step 1 keeps conv1 trained; back to None is the trained network; the model is untouched
    assert torch.equal(first.at(steps[0]).get_submodule("0").weight,
                       model.get_submodule("0").weight)
    assert not torch.equal(first.at(steps[0]).get_submodule("3").weight,
                           model.get_submodule("3").weight)
    trained = first.at(None)
    for name in ("0", "3", "6"):
        assert torch.equal(trained.get_submodule(name).weight, model.get_submodule(name).weight)
    assert first.network is not model


def test_the_default_randomiser_is_the_modules_own_init_and_keep_weights_keeps_them():
    conv = torch.nn.Conv2d(3, 4, 3)
    torch.manual_seed(5)
    expected = torch.nn.Conv2d(3, 4, 3).weight.detach().clone()  # its init, under seed 5
    torch.manual_seed(5)
    reset_weights(conv)
    assert torch.equal(conv.weight, expected)
    weight = conv.weight.detach().clone()
    keep_weights(conv)
    assert torch.equal(conv.weight, weight)

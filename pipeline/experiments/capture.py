"""One forward pass that returns the class probabilities and chosen inner tensors together.

Occlusion and invariance both need, for the same batch, a layer's feature maps and the
network's softmax output; running the model twice (``feature_maps`` then the logits) would
double the cost of the stages' only expensive step.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pipeline.models.evaluation import evaluating
from pipeline.models.pooling import shifted_max_pooling


def last_linear(model: nn.Module) -> str | None:
    """Dotted name of the model's last ``nn.Linear`` (its classifier's output layer), or None:
    the input of that layer is the network's last hidden representation."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else None


def forward_capturing(model: nn.Module, images: Tensor, outputs: Sequence[str] = (),
                      inputs: Sequence[str] = ()
                      ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Softmax probabilities ``[B, classes]`` of ``images``, the output of each module named in
    ``outputs`` and the (first positional) input of each in ``inputs``, by name, from the
    module's last call in the pass (as the activations stage records a module called twice).

    The model runs in eval mode without gradients; its modes are restored and every hook
    removed afterwards, also after an error."""
    seen_outputs: dict[str, Tensor] = {}
    seen_inputs: dict[str, Tensor] = {}
    handles = []

    # Copies, not views: a later in-place operation (ReLU(inplace=True) after a conv, ResNet's
    # ``out += identity``) would otherwise rewrite what was captured before the pass ends.
    def keep_output(name: str):
        return lambda _module, _args, output: seen_outputs.__setitem__(name,
                                                                        output.detach().clone())

    def keep_input(name: str):
        return lambda _module, args: seen_inputs.__setitem__(name, args[0].detach().clone())

    try:
        for name in outputs:
            handles.append(model.get_submodule(name).register_forward_hook(keep_output(name)))
        for name in inputs:
            handles.append(model.get_submodule(name).register_forward_pre_hook(keep_input(name)))
        with evaluating(model), shifted_max_pooling(images.device):
            probabilities = model(images).float().softmax(dim=1)
    finally:
        for handle in handles:
            handle.remove()
    return probabilities, seen_outputs, seen_inputs

"""Forward hooks that reduce each recorded layer's maps to per-unit summaries on the device.

Only the summaries leave the device: per image and channel the maximum, where it is (flattened
``y * width + x``) and the mean. Reducing inside the hook means a layer's full maps never have to
be kept (but for each unit's strongest, when a keeper is given:
:mod:`pipeline.inference.top_maps`), and in-place modules later in the network cannot change
what was recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from pipeline.inference.top_maps import TopMaps


@dataclass
class LayerSummary:
    """One batch's summaries of one layer: each ``[B, C]``."""

    max: torch.Tensor
    argmax: torch.Tensor
    mean: torch.Tensor


class SummaryRecorder:
    """Records :class:`LayerSummary` for the modules ``names`` of ``model`` during a forward pass.

    Use as a context manager; hooks are removed on exit, also after an error. A module called
    several times in one forward pass (a reused ReLU) keeps the summary of its last call.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], keeper: TopMaps | None = None
                 ) -> None:
        self.model = model
        self.names = list(names)
        self.keeper = keeper  # also offered each map, in the hook (see pipeline.inference.top_maps)
        self.summaries: dict[str, LayerSummary] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> SummaryRecorder:
        try:
            for name in self.names:
                module = self.model.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this recorder added."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            flat = output.detach().flatten(2).float()
            peak, where = flat.max(dim=2)
            self.summaries[name] = LayerSummary(peak, where.to(torch.int32), flat.mean(dim=2))
            if self.keeper is not None:
                self.keeper.offer(name, output, peak)

        return record

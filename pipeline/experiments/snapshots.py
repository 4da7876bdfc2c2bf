"""Which weights the evolution stage compares: the files of ``[evolution] checkpoints`` when
the list is set (labelled by their file names), else the snapshots the train stage keeps at
``[train] snapshot_epochs`` (labelled "epoch N"). Loading goes through the same helpers as
``[model] checkpoint``, so a wrong file gets the same one-line errors, naming its setting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipeline.config import ModelConfig

CHECKPOINTS = "[evolution] checkpoints"
SNAPSHOT_EPOCHS = "[train] snapshot_epochs"


@dataclass(frozen=True)
class Snapshot:
    """One set of weights compared: its label in the atlas, its file, the setting naming it."""

    label: str
    path: Path
    option: str


def snapshot_files(checkpoints: tuple[str, ...], kept: dict[int, Path]) -> list[Snapshot]:
    """The weights the evolution stage compares, in order: the files of ``[evolution]
    checkpoints`` when set, else ``kept`` (the train stage's snapshot file of each epoch)."""
    if checkpoints:
        paths = [Path(path).expanduser() for path in checkpoints]
        return [Snapshot(label, path, CHECKPOINTS)
                for label, path in zip(file_labels(paths), paths, strict=True)]
    return [Snapshot(f"epoch {epoch}", path, SNAPSHOT_EPOCHS) for epoch, path in kept.items()]


def file_labels(paths: list[Path]) -> list[str]:
    """Each file's name; files of the same name are told apart by their place in the list
    (``1. model.pt``, ``2. model.pt``). Never a folder: the labels are shown in a shared atlas,
    where a parent folder may be a user's name."""
    names = [path.name for path in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{i}. {name}" for i, name in enumerate(names, start=1)]


def read_snapshot(spec: ModelConfig, source: str, snapshot: Snapshot, model: nn.Module,
                  num_classes: int, assign: bool = False) -> None:
    """Load ``snapshot``'s weights into ``model`` (built by ``build_model``), or refuse in one
    line naming the file and its setting."""
    from pipeline.models.loading import fit_state_dict, read_weights

    if snapshot.option == SNAPSHOT_EPOCHS and not snapshot.path.is_file():
        raise UserError(f"{snapshot.path}: the weights of {snapshot.label} ({SNAPSHOT_EPOCHS}) "
                        "were not kept; retrain to keep them (`python -m pipeline run train "
                        f"--force -w {source}`) or list the files to compare in "
                        f"{CHECKPOINTS}")
    state = read_weights(spec, snapshot.path, source, snapshot.option).state
    fit_state_dict(model, state, snapshot.path, spec.label, num_classes,
                   assign=assign, option=snapshot.option)


def load_snapshot(spec: ModelConfig, source: str, snapshot: Snapshot, num_classes: int,
                  device: torch.device) -> nn.Module:
    """``[model]``'s model with ``snapshot``'s weights, in eval mode on ``device``."""
    from pipeline.models.loading import build_model

    model = build_model(spec, num_classes)
    read_snapshot(spec, source, snapshot, model, num_classes)
    return model.eval().to(device)

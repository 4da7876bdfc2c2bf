"""The pipeline's stages, registered in dependency order by importing their modules."""

import importlib

from pipeline.stages.registry import (
    Output,
    Stage,
    get_stage,
    list_stages,
    register_stage,
    stage_writing,
)

#: Dependency order: each module registers its stage on import, so this is the order of `run all`.
STAGE_MODULES = ("prepare", "train", "activations", "rank", "deconv", "occlusion", "evolution",
                 "invariance", "sanity", "render")

for _module in STAGE_MODULES:
    importlib.import_module(f"pipeline.stages.{_module}")

__all__ = ["STAGE_MODULES", "Output", "Stage", "get_stage", "list_stages", "register_stage",
           "stage_writing"]

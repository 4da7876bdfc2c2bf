"""The pipeline's stages, registered in dependency order by importing their modules."""

import importlib

from pipeline.stages.registry import (
    Stage,
    get_stage,
    list_stages,
    readers_of,
    register_stage,
    stage_writing,
)

#: Dependency order: each module registers its stage on import, so this is the order of `run all`.
STAGE_MODULES = ("prepare", "train", "activations", "rank", "deconv", "featurevis", "occlusion",
                 "evolution", "invariance", "sanity", "render")

for _module in STAGE_MODULES:
    importlib.import_module(f"pipeline.stages.{_module}")

__all__ = ["STAGE_MODULES", "Stage", "get_stage", "list_stages", "readers_of", "register_stage",
           "stage_writing"]

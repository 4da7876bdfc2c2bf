"""timm's models by name (``[model] name = "timm/<architecture>"``), with their pretrained weights.

timm is an optional extra (``pip install -e ".[timm]"``): without it a ``timm/`` name is refused
in one line that says how to install it. Pretrained weights are found where timm keeps them (the
Hugging Face hub cache, or the torch hub cache for weights timm fetches by URL) and loaded through
timm's own loader (its filters and conversions apply); a file that is not cached is downloaded by
timm when ``[model] download`` allows, else the error names the file and where to put it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError, one_line
from pipeline.models.torchvision_models import OFFLINE_VARIABLE

if TYPE_CHECKING:
    from torch import nn

#: The prefix that marks a timm architecture in ``[model] name``.
TIMM_PREFIX = "timm/"


def is_timm_name(name: str) -> bool:
    """Whether ``name`` names a timm architecture (``timm/resnet50``)."""
    return name.startswith(TIMM_PREFIX)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserError("timm is not installed, and the model is a timm model; install it with "
                        "`pip install -e \".[timm]\"` (or `pip install timm`)") from None
    return timm


def architecture(name: str) -> str:
    """The timm architecture of ``timm/<architecture>``, refused in one line if timm lacks it."""
    timm = _timm()
    arch = name[len(TIMM_PREFIX):]
    if not timm.is_model(arch) or "." in arch:
        close = difflib.get_close_matches(arch, timm.list_models(), n=1)
        hint = f"did you mean 'timm/{close[0]}'? " if close else ""
        raise UserError(f"unknown timm model '{arch}'; {hint}`python -c \"import timm; "
                        "print(timm.list_models('resnet*'))\"` lists the architectures")
    return arch


def build_timm_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """The timm architecture ``name`` with freshly initialised weights (nothing downloaded)."""
    return _timm().create_model(architecture(name), pretrained=False, num_classes=num_classes,
                                **kwargs)


def _file_name(url: str | tuple[str, str]) -> str:
    """The name of the file timm caches a weights URL under (timm's configurations may give
    a (URL, file name) pair instead of a URL)."""
    return url[1] if isinstance(url, tuple) else Path(url).name


class TimmWeights:
    """A timm architecture's pretrained weights: ``weights`` is "DEFAULT" (timm's default tag)
    or a pretrained tag ("a1_in1k", or "resnet18.a1_in1k")."""

    def __init__(self, name: str, weights: str, source: str) -> None:
        timm = _timm()
        self.name = name
        arch = architecture(name)
        tag = "" if weights == "DEFAULT" else weights.split(".", 1)[-1] if \
            weights.startswith(f"{arch}.") else weights
        tags = [known.split(".", 1)[1] for known in timm.list_pretrained(f"{arch}.*")]
        if tag and tag not in tags:
            valid = ", ".join(["DEFAULT", *tags]) or "none: this architecture has no weights"
            raise UserError(f"{source}: [model] weights '{weights}' is not a pretrained tag of "
                            f"timm/{arch}; choose one of {valid}")
        if not tags:
            raise UserError(f"{source}: timm/{arch} has no pretrained weights; leave [model] "
                            "weights empty and give [model] checkpoint, or train it")
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
        assert cfg is not None  # the architecture's default or one of its listed tags
        self.cfg = cfg
        self.tagged = f"{arch}.{self.cfg.tag}" if self.cfg.tag else arch

    @property
    def description(self) -> str:
        """What the run card says the weights are."""
        return f"timm {self.tagged}"

    def preset(self) -> dict[str, Any]:
        """The preprocessing the weights were evaluated with: crop, resize (the crop divided by
        timm's crop_pct, rounded down, as timm's eval transform does), mean, std and
        interpolation."""
        import math

        from timm.data import resolve_data_config

        config = resolve_data_config(pretrained_cfg=self.cfg.to_dict())
        crop = int(config["input_size"][-1])
        interpolation = config.get("interpolation", "bilinear")
        return {"input_size": crop, "resize": math.floor(crop / float(config.get("crop_pct", 1.0))),
                "mean": tuple(float(v) for v in config["mean"]),
                "std": tuple(float(v) for v in config["std"]),
                "interpolation": interpolation if interpolation in
                ("nearest", "bilinear", "bicubic") else "bilinear"}

    def num_classes(self) -> int:
        return int(self.cfg.num_classes or 1000)

    def categories(self) -> list[str] | None:
        """The class names of ImageNet-1k weights (timm keeps torchvision's class order);
        None for weights of other label sets."""
        from timm.data import infer_imagenet_subset

        if infer_imagenet_subset(self.cfg) != "imagenet-1k" or self.num_classes() != 1000:
            return None
        from torchvision.models._meta import _IMAGENET_CATEGORIES  # ImageNet-1k's, in order

        return list(_IMAGENET_CATEGORIES)

    def cached_file(self) -> Path | None:
        """The weights file in timm's cache (Hugging Face hub cache, or the torch hub cache for
        weights fetched by URL), or None."""
        if self.cfg.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            repo, _, revision = self.cfg.hf_hub_id.partition("@")
            names = [self.cfg.hf_hub_filename] if self.cfg.hf_hub_filename else [
                "model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str):
                    return Path(found)
        if self.cfg.url:
            import torch

            path = Path(torch.hub.get_dir()) / "checkpoints" / _file_name(self.cfg.url)
            if path.is_file():
                return path
        return None

    def where(self) -> str:
        """Where timm would keep the file, for the error that asks the user to put it there."""
        if self.cfg.hf_hub_id:
            from huggingface_hub import constants

            return (f"the Hugging Face hub cache ({constants.HF_HUB_CACHE}, set by HF_HOME) as "
                    f"repository {self.cfg.hf_hub_id}")
        import torch

        # (every pretrained configuration timm registers names a hub repository or a URL)
        assert self.cfg.url is not None
        return f"{Path(torch.hub.get_dir()) / 'checkpoints'} as {_file_name(self.cfg.url)}"

    def check(self, download: bool) -> Path | None:
        """The cached weights file; None if it is not cached but timm may download it; a
        ``UserError`` naming what to put where if it is not cached and downloads are off."""
        path = self.cached_file()
        if path is None and (not download or os.environ.get(OFFLINE_VARIABLE) == "1"):
            raise UserError(f"timm {self.tagged}: weights not in timm's cache and downloads are "
                            f"off; put them in {self.where()} (e.g. run `timm.create_model("
                            f"'{self.tagged}', pretrained=True)` once on a machine online), or "
                            "give a state-dict file as [model] checkpoint")
        return path

    def load(self, download: bool) -> nn.Module:
        """The model with these weights, loaded by timm (from the cached file when there is
        one, so nothing is requested from the network)."""
        path = self.check(download)
        overlay = {"file": str(path)} if path is not None else None
        try:
            return _timm().create_model(self.tagged, pretrained=True,
                                        pretrained_cfg_overlay=overlay)
        except (OSError, RuntimeError, ValueError) as error:
            raise UserError(f"timm {self.tagged}: could not load the weights "
                            f"({one_line(error)}); put "
                            f"them in {self.where()}, or set [model] checkpoint") from None

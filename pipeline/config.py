"""Workflow files: TOML loaded into frozen, documented dataclasses.

Every option is declared once, with its type, default and a one-line doc (``field(metadata=...)``).
The loader refuses unknown keys (naming the nearest valid one), wrong types and missing required
values with a :class:`ConfigError` that names the file and the key, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

REQUIRED: Any = dataclasses.MISSING


class FrozenTable(dict):
    """A TOML table of free keys (the factory's arguments), read-only and hashable like the
    frozen config that holds it; it pickles (for dask workers) and serialises as a dict."""

    def __hash__(self) -> int:  # type: ignore[override]
        import json

        return hash(json.dumps(self, sort_keys=True, default=str))

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("workflow options are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple:
        return (FrozenTable, (dict(self),))


#: The default of a table option: an empty one.
FROZEN_EMPTY: Any = FrozenTable()


def option(default: Any = REQUIRED, doc: str = "", choices: tuple[str, ...] = (),
           execution: bool = False, since: str = "", formerly: str = "") -> Any:
    """Declare a config option with its default, a one-line doc and optional allowed values.

    ``execution=True`` marks an option that changes how a stage runs, never what it computes
    (workers, devices, batch sizes of inference): it is left out of every stage's stamp, so
    changing it never makes finished work stale. ``since`` names the release that added an
    option to an existing section: at its default it is left out of the stamp too, so adding
    it does not make the work of earlier releases stale. ``formerly`` is the option's old
    spelling: a file that uses it still loads, with a one-line note, and the stamps keep the
    old name, so a renamed option leaves finished work done.
    """
    meta = {"doc": doc, "choices": choices, "execution": execution, "since": since,
            "formerly": formerly}
    if isinstance(default, (list, dict, set)) and not isinstance(default, FrozenTable):
        raise TypeError("use tuples for sequence defaults so configs stay frozen and hashable")
    if default is REQUIRED:
        return field(metadata=meta)
    if dataclasses.is_dataclass(default) or isinstance(default, FrozenTable):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


#: What every section with a ``device`` says of ``tf32`` (pipeline.device.compute_on).
TF32_DOC = ("on CUDA, let float32 convolutions and matrix products use TF32: faster on recent "
            "GPUs, about 1e-3 from float32; off (the default): true float32")


@dataclass(frozen=True)
class SyntheticConfig:
    """The demo's generated image data set."""

    image_size: int = option(64, "side of the generated square images, in pixels")
    train_per_class: int = option(300, "training images generated per class")
    val_per_class: int = option(128, "validation (analysed) images generated per class")
    seed: int = option(0, "seed of the generator; the same seed gives byte-identical images")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from."""

    source: str = option(
        "imagefolder",
        "'synthetic' generates the demo images; 'imagefolder' reads one sub-folder per class; "
        "'imagenet' reads the official flat ImageNet val files with the devkit's labels",
        choices=("synthetic", "imagefolder", "imagenet"),
    )
    root: str = option("", "folder of the analysed images (see source)")
    devkit: str = option("", "ILSVRC2012_devkit_t12.tar.gz or its folder, for source 'imagenet'; "
                         "empty looks in root and its parent")
    train_root: str = option("", "folder of training images, needed only when [train] runs")
    synthetic: SyntheticConfig = option(SyntheticConfig(), "settings of the generated data set")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which network is analysed and how its inputs are preprocessed."""

    name: str = option("", "model name: 'zfnet_small', 'zfnet', any torchvision classifier "
                       "('vgg16') or a timm architecture ('timm/resnet50'); empty with factory")
    factory: str = option("", "your own model: 'file.py:function' (relative to the current "
                          "folder) or 'package.module:function', returning an nn.Module; "
                          "given num_classes when it takes it", since="0.8.0")
    factory_args: dict = option(FROZEN_EMPTY, "keyword arguments of the factory function "
                                "([model.factory_args] table)", since="0.8.0")
    weights: str = option("", "published weights: torchvision's ('DEFAULT', 'IMAGENET1K_V1') "
                          "or timm's ('DEFAULT' or a pretrained tag); they also set "
                          "preprocessing and class names")
    download: bool = option(True, "fetch published weights missing from the torch hub (or "
                            "timm's) cache", execution=True)
    checkpoint: str = option("", "weights file to load (state dict, Lightning, DDP, compiled or "
                             ".safetensors); empty uses the trained model.pt")
    checkpoint_key: str = option("", "entry of the checkpoint that holds the weights (e.g. "
                                 "'model_ema'); empty tries state_dict, model, "
                                 "model_state_dict, net, network", since="0.8.0")
    trust_pickle: bool = option(False, "load a checkpoint that holds pickled Python objects (a "
                                "whole torch.save(model)): runs code from the file, so only for "
                                "a file you trust", since="0.8.0")
    image_size: int = option(224, "side of the square network input (the centre crop), in pixels")
    resize_size: int = option(0, "shorter side the image is resized to before the crop; "
                              "0 resizes straight to image_size")
    mean: tuple[float, ...] = option((0.485, 0.456, 0.406), "per-channel mean for normalisation "
                                     "(one value per input channel of the model; ImageNet's "
                                     "average for a one-channel model when left as it is)")
    std: tuple[float, ...] = option((0.229, 0.224, 0.225), "per-channel std for normalisation")
    overrides: tuple[str, ...] = field(default=(), metadata={
        "doc": "the preprocessing options the workflow file sets beside published weights "
               "(they win over the weights' own)", "internal": True, "keyed": True,
        "since": "0.8.0"})

    @property
    def label(self) -> str:
        """How the atlas and the logs name the model: its name, or its factory."""
        return self.name or self.factory


@dataclass(frozen=True)
class TrainConfig:
    """Training of the model on the CPU or GPU before it is analysed (the demo uses it)."""

    enabled: bool = option(False, "train the model in this run (otherwise load it)")
    epochs: int = option(10, "passes over the training images")
    batch_size: int = option(32, "images per optimisation step")
    optimizer: str = option("adamw", "'adamw', or 'sgd' with momentum as in the paper (smoother "
                            "first-layer filters)", choices=("adamw", "sgd"))
    momentum: float = option(0.9, "momentum of 'sgd'")
    lr: float = option(1e-3, "learning rate: the peak of schedule 'cosine', the first rate of "
                       "'plateau'")
    weight_decay: float = option(5e-4, "L2 weight decay")
    filter_radius: float = option(0.0, "after each step, scale every conv filter whose RMS "
                                  "exceeds this back to it, as in the paper (0.1); 0 = off")
    first_init_scale: float = option(1.0, "factor on the first conv's initial weights; small "
                                     "values leave no init noise in the learned filters")
    seed: int = option(0, "seed of initialisation and shuffling")
    recipe: str = option(
        "custom", "'custom' uses the options as set; 'zf2013' is Zeiler & Fergus's recipe and "
        "sets optimizer 'sgd', lr 0.01, momentum 0.9, batch_size 128, schedule 'plateau', "
        "init_std 0.01, augment true and filter_radius 0.1 (an option set in the file still "
        "wins)", choices=("custom", "zf2013"), since="0.4.0")
    schedule: str = option("cosine", "learning rate over training: 'cosine' (warm-up, then "
                           "cosine decay) or 'plateau' (lr / 10 when the validation accuracy "
                           "stops improving, as in the paper)", choices=("cosine", "plateau"),
                           since="0.4.0")
    plateau_patience: int = option(2, "with schedule 'plateau': epochs without a better "
                                   "validation accuracy before the lr is divided by 10",
                                   since="0.4.0")
    init_std: float = option(0.0, "> 0 draws every conv and linear weight from N(0, init_std^2) "
                             "and sets biases to 0 (the paper: 0.01), before first_init_scale "
                             "applies; 0 keeps the model's own init", since="0.4.0")
    augment: bool = option(False, "train on random image_size crops of the centre square of "
                           "the image resized to resize_size (0: image_size * 256 / 224), "
                           "flipped at random, as in the paper (224 crops of 256); the analysed "
                           "images are never augmented", since="0.4.0")
    snapshot_epochs: tuple[int, ...] = option(
        (), "epochs whose weights are kept in snapshots/epoch_NNN.pt for the evolution stage "
        "(the paper: 1, 2, 5, 10, 20, 30, 40, 64); epochs beyond [train] epochs are refused",
        since="0.4.0")
    num_workers: int = option(0, "DataLoader worker processes decoding the training and "
                              "validation images; the random crops drawn depend on it, so a "
                              "resumed run repeats an uninterrupted one when it keeps the same "
                              "number", execution=True, since="0.4.0")
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True)
    tf32: bool = option(False, TF32_DOC, execution=True)


#: The [model] options that, set in the file, win over published weights' preprocessing.
PREPROCESSING_OPTIONS = ("image_size", "resize_size", "mean", "std")


#: Zeiler & Fergus (2013, sec. 3): what ``[train] recipe = "zf2013"`` sets unless the file does.
RECIPES: dict[str, dict[str, Any]] = {
    "zf2013": {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "batch_size": 128,
               "schedule": "plateau", "init_std": 1e-2, "augment": True, "filter_radius": 0.1},
}


@dataclass(frozen=True)
class ActivationsConfig:
    """Inference over the analysed images, storing per-unit summaries in zarr."""

    modules: tuple[str, ...] = option((), "dotted module names to record (each becomes a layer, "
                                      "labelled conv1, conv2, ...); empty = each conv block's "
                                      "activation output (`layers` lists them)",
                                      formerly="layers")
    batch_size: int = option(64, "images per forward pass", execution=True)
    chunk_size: int = option(512, "images per zarr chunk (the unit of resumption)",
                             execution=True)
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True)
    tf32: bool = option(False, TF32_DOC, execution=True)
    num_workers: int = option(0, "DataLoader worker processes", execution=True)
    prefetch: int = option(2, "batches each worker prepares ahead (with num_workers > 0)",
                           execution=True)
    bf16: bool = option(False, "bfloat16 autocast of the forward passes (on CUDA, or the CPU); "
                        "rank re-checks each unit's top candidates in float32, so the ranked "
                        "values and positions are float32's")
    channels_last: bool = option(False, "channels-last memory format on a GPU")


@dataclass(frozen=True)
class RankConfig:
    """Ranking of every unit's top images with dask."""

    top_k: int = option(9, "images kept per unit")


@dataclass(frozen=True)
class DeconvConfig:
    """Projection of every top activation back to pixel space."""

    methods: tuple[str, ...] = option(
        ("deconvnet",), "projection rules, each stored and shown (unit pages switch between "
        "them; layer pages show the first): 'deconvnet', 'guided', 'gradient'")
    batch_size: int = option(64, "projections computed together", execution=True)
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True)
    tf32: bool = option(False, TF32_DOC, execution=True)
    num_workers: int = option(-1, "DataLoader worker processes decoding the top images (each "
                              "once per stage); -1 = one per CPU core, at most 8 and one per 32 "
                              "images; 0 = in the stage's own process, as for [activations]",
                              execution=True, since="0.5.0")


@dataclass(frozen=True)
class FeatureVisConfig:
    """Feature visualization by optimization: for each unit, the input it wants (Lucid's
    recipe: decorrelated Fourier image, random jitter, scale and rotation, Adam)."""

    enabled: bool = option(True, "run the featurevis stage; false turns it off",
                           since="0.10.0")
    units: int = option(0, "units optimised per layer, the most class-selective first (as the "
                        "index's strips pick them); 0 = all", since="0.10.0")
    steps: int = option(512, "Adam steps per image (Lucid's 512); fewer is faster and less "
                        "finished", since="0.10.0")
    lr: float = option(0.05, "Adam's step size (Lucid's)", since="0.10.0")
    seed: int = option(0, "draws the initial images and the transforms: the same seed gives "
                       "the same images", since="0.10.0")
    batch_size: int = option(64, "units optimised together, one image each (a block: a killed "
                             "run continues after the last one written)", execution=True,
                             since="0.10.0")
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True, since="0.10.0")
    tf32: bool = option(False, TF32_DOC, execution=True)


@dataclass(frozen=True)
class OcclusionConfig:
    """Figure 7: a grey square slid over sample images, and what it does to the network."""

    images: int = option(16, "analysed images occluded, picked evenly over the classes "
                         "(the same ones every run); 0 turns the stage off")
    files: tuple[str, ...] = option((), "image files to occlude instead (paths as in the "
                                    "manifest, relative to the data root)")
    layer: str = option("", "layer label (e.g. 'conv5') whose strongest feature map is tracked; "
                        "empty = the last analysed conv layer")
    size: int = option(0, "side of the grey square in pixels; 0 = a quarter of the input side")
    stride: int = option(0, "pixels between occluder positions; 0 = an eighth of the square")
    batch_size: int = option(64, "occluded images per forward pass", execution=True)
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True)
    tf32: bool = option(False, TF32_DOC, execution=True)


@dataclass(frozen=True)
class EvolutionConfig:
    """Figure 4: each unit's strongest activation at each training snapshot, projected."""

    checkpoints: tuple[str, ...] = option(
        (), "state-dict files to compare, in order, instead of [train] snapshot_epochs' "
        "snapshots (the stage runs when either is set)")
    images: int = option(0, "analysed images searched for each unit's strongest activation "
                         "(evenly spaced); 0 = all")
    batch_size: int = option(64, "images per forward pass and projections computed together",
                             execution=True)
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True)
    tf32: bool = option(False, TF32_DOC, execution=True)
    num_workers: int = option(-1, "DataLoader worker processes decoding the searched images "
                              "(once, for all snapshots); -1 = one per CPU core, at most 8 and "
                              "one per 32 images; 0 = in the stage's own process",
                              execution=True)


@dataclass(frozen=True)
class InvarianceConfig:
    """Figure 5: feature distances and class probability under translation, scale, rotation."""

    images: int = option(5, "analysed images transformed, picked evenly over the classes; "
                         "0 turns the stage off")
    files: tuple[str, ...] = option((), "image files to transform instead (paths as in the "
                                    "manifest)")
    batch_size: int = option(64, "transformed images per forward pass", execution=True)
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True)
    tf32: bool = option(False, TF32_DOC, execution=True)
    # A class that *is* what a transform changes (stripes that are their orientation) would
    # read as "not invariant" when the model is right; the synthetic demo declares its own.
    exclude_translation: tuple[str, ...] = option((), "classes (names as in classes.parquet) "
                                                  "left out of the translation curves",
                                                  since="0.9.0")
    exclude_scale: tuple[str, ...] = option((), "classes left out of the scaling curves",
                                            since="0.9.0")
    exclude_rotation: tuple[str, ...] = option((), "classes left out of the rotation curves "
                                               "(e.g. classes defined by their orientation)",
                                               since="0.9.0")


@dataclass(frozen=True)
class SanityConfig:
    """Sanity checks (Adebayo et al. 2018): projections through randomised weights, and how
    much they follow their images."""

    enabled: bool = option(True, "run the sanity stage; false turns it off", since="0.9.0")
    units: int = option(16, "units sampled per layer, evenly over its live units",
                        since="0.9.0")
    images: int = option(3, "top images (ranks) of each sampled unit that are projected again",
                         since="0.9.0")
    seed: int = option(0, "seed of the random weights (the same seed gives the same weights)",
                       since="0.9.0")
    batch_size: int = option(64, "projections computed together", execution=True,
                             since="0.9.0")
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device string",
                         execution=True, since="0.9.0")
    tf32: bool = option(False, TF32_DOC, execution=True)


@dataclass(frozen=True)
class RenderConfig:
    """The static HTML atlas."""

    title: str = option("", "title of the atlas; empty uses the workflow name")
    workers: int = option(0, "processes writing the atlas's images and pages; 0 = one per CPU "
                          "core, 1 = all in the render process", execution=True, since="0.5.0")
    picture_budget: float = option(
        30.0, "megapixels of projection pictures in the atlas (every method, both display "
        "curves; about 1.6 MB each, lossless): receptive fields are binned by whole factors, "
        "the same for all layers, until they fit; 0 = bin only fields above 64 px",
        since="0.9.0")


@dataclass(frozen=True)
class DaskConfig:
    """Where the dask-aware stages (activations, rank) run; never part of a stage's stamp."""

    scheduler: str = option("", "address of a running dask scheduler, e.g. 'tcp://host:8786'; "
                            "empty runs on this machine (`run --scheduler` overrides it)")
    gpu: bool = option(False, "each activations shard task needs a worker with a 'GPU' resource "
                       "(start workers with `--resources GPU=1`)")
    shards: int = option(0, "activations shard tasks on a cluster; 0 = one per worker, or one "
                         "per GPU with gpu = true")


@dataclass(frozen=True, kw_only=True)
class Workflow:
    """One experiment: a model, a data set and the settings of every stage."""

    name: str = option("", "name of the run folder; empty uses the workflow file's stem")
    model: ModelConfig = option(doc="the analysed network")
    data: DataConfig = option(DataConfig(), "the analysed images")
    train: TrainConfig = option(TrainConfig(), "optional training stage")
    activations: ActivationsConfig = option(ActivationsConfig(), "inference stage")
    rank: RankConfig = option(RankConfig(), "ranking stage")
    deconv: DeconvConfig = option(DeconvConfig(), "projection stage")
    featurevis: FeatureVisConfig = option(FeatureVisConfig(), "feature visualization stage",
                                          since="0.10.0")
    occlusion: OcclusionConfig = option(OcclusionConfig(), "occlusion stage (Figure 7)")
    evolution: EvolutionConfig = option(EvolutionConfig(), "feature evolution stage (Figure 4)")
    invariance: InvarianceConfig = option(InvarianceConfig(), "invariance stage (Figure 5)")
    sanity: SanityConfig = option(SanityConfig(), "sanity checks of the projections",
                                  since="0.9.0")
    render: RenderConfig = option(RenderConfig(), "atlas stage")
    dask: DaskConfig = option(DaskConfig(), "dask cluster for the activations and rank stages")
    source: str = field(default="", metadata={"doc": "file it was loaded from", "internal": True})

    def section(self, name: str) -> Any:
        """Return the config section ``name`` (a frozen dataclass)."""
        return getattr(self, name)

    def with_absolute_paths(self) -> Workflow:
        """A copy whose file options are absolute, resolved against the current directory, for
        processes that start elsewhere (dask workers)."""
        def absolute(value: str) -> str:
            return str(Path(value).expanduser().absolute()) if value else value

        data = dataclasses.replace(self.data, root=absolute(self.data.root),
                                   devkit=absolute(self.data.devkit),
                                   train_root=absolute(self.data.train_root))
        from pipeline.config_checks import factory_is_file, factory_parts

        factory = self.model.factory
        parts = factory_parts(factory)
        if parts and factory_is_file(parts[0]):  # "file.py:build": the file's path
            factory = f"{absolute(parts[0])}:{parts[1]}"
        model = dataclasses.replace(self.model, checkpoint=absolute(self.model.checkpoint),
                                    factory=factory)
        evolution = dataclasses.replace(self.evolution, checkpoints=tuple(
            absolute(path) for path in self.evolution.checkpoints))
        return dataclasses.replace(self, data=data, model=model, evolution=evolution)


def load_workflow(path: Path, data_root: str | None = None) -> Workflow:
    """Read the workflow file ``path``; ``data_root`` (``--data``) overrides ``[data] root``."""
    if not path.is_file():
        raise ConfigError(f"{path}: workflow file not found; pass an existing file with -w")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    if data_root is not None:
        table.setdefault("data", {})
        if isinstance(table["data"], dict):
            table["data"]["root"] = data_root
    table["source"] = str(path)
    if table.get("name", "") == "":  # documented: empty uses the file's stem
        table["name"] = path.stem
    workflow = _build(Workflow, table, path, prefix="")
    if isinstance(table.get("model"), dict) and workflow.model.weights:
        overrides = tuple(key for key in PREPROCESSING_OPTIONS if key in table["model"])
        workflow = dataclasses.replace(workflow, model=dataclasses.replace(
            workflow.model, overrides=overrides))
    from pipeline.config_checks import validate

    return validate(_apply_recipe(workflow, table, path), path)


def _apply_recipe(workflow: Workflow, table: dict, path: Path) -> Workflow:
    """Fill the options a named ``[train] recipe`` sets, except those the file sets itself."""
    recipe = RECIPES.get(workflow.train.recipe)
    if recipe is None:
        return workflow
    given = table.get("train", {})
    values = {key: value for key, value in recipe.items() if key not in given}
    return dataclasses.replace(workflow, train=dataclasses.replace(workflow.train, **values))


def _build(cls: type, table: Any, path: Path, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{where}] must be a table, got {type(table).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    table = _renamed(table, fields, path, prefix)
    for key in table:
        if key not in fields or (fields[key].metadata.get("internal") and key != "source"):
            near = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else (
                f"; valid keys: {', '.join(sorted(fields))}")
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'{hint}")
    values = {}
    for name, spec in fields.items():
        key = f"{prefix}{name}"
        if name not in table:
            if spec.default is REQUIRED and spec.default_factory is REQUIRED:
                raise ConfigError(f"{path}: missing required key '{key}' ({spec.metadata['doc']})")
            continue
        values[name] = _convert(hints[name], table[name], path, key, spec.metadata)
    return cls(**values)


def _renamed(table: dict, fields: dict[str, dataclasses.Field], path: Path, prefix: str
             ) -> dict:
    """``table`` with old spellings of options (``formerly``) under their new names, each
    noted in one line on stderr."""
    import sys

    for name, spec in fields.items():
        old = spec.metadata.get("formerly")
        if not old or old not in table:
            continue
        if name in table:
            raise ConfigError(f"{path}: '{prefix}{old}' and '{prefix}{name}' are the same option "
                              f"(its old and new name); keep '{prefix}{name}'")
        table = {(name if key == old else key): value for key, value in table.items()}
        print(f"{path}: '{prefix}{old}' is now called '{prefix}{name}'; the old name still "
              "works", file=sys.stderr)
    return table


def _convert(hint: Any, value: Any, path: Path, key: str, meta: typing.Mapping) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, path, prefix=f"{key}.")
    if hint is dict:  # a table of free keys (the factory's arguments), held read-only
        if not isinstance(value, dict):
            raise _type_error(path, key, "a table", value)
        return FrozenTable(value)
    origin = typing.get_origin(hint)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise _type_error(path, key, f"a list of {item_type.__name__}", value)
        return tuple(_convert(item_type, item, path, key, {}) for item in value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported option type {hint} for {key}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise _type_error(path, key, hint.__name__, value)
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{path}: {key}: expected one of {list(choices)}, got {value!r}")
    return value


def _type_error(path: Path, key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{path}: {key}: expected {expected}, got {type(value).__name__} {value!r}")


def describe(cls: type = Workflow, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """List (key, type, default, doc) of every option, for the README's reference table."""
    rows = []
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("internal"):
            continue
        hint = hints[spec.name]
        key = f"{prefix}{spec.name}"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            rows.extend(describe(hint, prefix=f"{key}."))
            continue
        if spec.default is not REQUIRED:
            default = repr(spec.default)
        elif spec.default_factory is not REQUIRED:  # a table: shown as TOML writes it empty
            default = "{}"
        else:
            default = "required"
        type_name = getattr(hint, "__name__", str(hint)).replace("typing.", "")
        doc = spec.metadata["doc"] + (" (execution only: never makes a stage stale)"
                                      if spec.metadata.get("execution") else "")
        rows.append((key, type_name, default, doc))
    return rows

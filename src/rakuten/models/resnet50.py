"""Image classifier on the cleaned images of ``image_clean``: any torchvision or timm backbone, fine-tuned.

The stage and section keep the name ``resnet50`` (the study's model), but ``arch`` takes any
torchvision classification model name (resnet18 ... resnet152, efficientnet_b0, ...: built by
torchvision, as before) or any other timm model name (convnext_*, efficientnet_*.<tag>, vit_*,
swin_*, deit_*, SigLIP/CLIP vision towers such as vit_base_patch16_siglip_224). timm models get
their own normalisation and interpolation (``timm.data.resolve_model_data_config``) and, when the
class takes it, ``img_size = image_size`` so ViT/DeiT/Swin/SigLIP towers run at small demo sizes.

Three profiles (``resnet50.profile`` in params.yaml), same code path:

* ``full``: ResNet50 with ImageNet weights (resolved by :func:`rakuten.runtime.pretrained.resolve_torchvision`:
  torch cache, then download, else one line saying what to fetch and where), 224 px, study-like epochs;
* ``strongest``: ConvNeXt-Base (timm, ImageNet-22k then 1k) at 224 px (weights by
  :func:`rakuten.runtime.pretrained.resolve_timm`: models/pretrained, HF cache, hub, else one line);
* ``demo`` (default): a torchvision ResNet with ``weights: none`` at a small input size and capped
  rows/epochs, so it runs offline on 2 CPU cores in minutes.

Training follows the study: a new 27-class head, Adam(W), augmentations (flips, small rotations,
colour/HSV jitter, zoom), class rebalancing (loss class weights, a weighted sampler, or none), the
per-image ``sample_weight`` of image_clean, rows with ``keep_for_train = False`` left out (counted),
early stopping on validation weighted F1 with the best epoch's weights kept, dvclive curves.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from rakuten.contracts.classes import N_CLASSES, indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.core.config import ConfigError, ProfileView, knob, parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path, read_parquet
from rakuten.runtime import distributed
from rakuten.runtime.distributed import World
from rakuten.runtime.knobs import CompileKnob, LaunchKnobs, TorchKnobs
from rakuten.runtime.torch_setup import (
    Runtime,
    choose_runtime,
    class_weights,
    frame_labels,
    read_meta,
    seed_everything,
    set_threads,
    softmax_proba,
    stratified_cap,
    write_meta,
)

log = logging.getLogger(__name__)

NAME = "resnet50"
PROFILES = ("demo", "full", "strongest")
ARCH_EXAMPLES = (
    "resnet50",
    "convnext_tiny",
    "efficientnet_b0.ra_in1k",
    "vit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
    "vit_base_patch16_siglip_224",
)
REBALANCE = ("none", "class_weights", "sampler")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
QUALITY_COLUMNS = ("row_id", "clean_path", "readable", "keep_for_train", "sample_weight")


@dataclass(frozen=True)
class Augment:
    """``resnet50.augment``: training augmentations (study: flips, small rotations, brightness/contrast/HSV
    jitter, zoom)."""

    hflip: float = knob(0.5, "probability of a horizontal flip", lo=0.0, hi=1.0)
    vflip: float = knob(0.0, "probability of a vertical flip", lo=0.0, hi=1.0)
    rotation: float = knob(10.0, "max rotation either way, in degrees", lo=0.0, hi=180.0)
    brightness: float = knob(0.2, "colour jitter: brightness", lo=0.0, hi=1.0)
    contrast: float = knob(0.2, "colour jitter: contrast", lo=0.0, hi=1.0)
    saturation: float = knob(0.2, "colour jitter: saturation", lo=0.0, hi=1.0)
    hue: float = knob(0.02, "colour jitter: hue", lo=0.0, hi=0.5)
    zoom_min: float = knob(
        0.8, "random crop of >= this share of the area, resized back (1.0 = no zoom)", lo=0.0, hi=1.0, lo_open=True
    )


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


@functools.lru_cache(maxsize=256)
def backbone_library(arch: str) -> str | None:
    """``"torchvision"`` for a torchvision classification model name (those keep torchvision, as
    before), ``"timm"`` for any other timm model name (tags allowed: ``convnext_tiny.fb_in22k``),
    None for neither."""
    if arch in _torchvision_names():
        return "torchvision"
    import timm

    return "timm" if timm.is_model(arch) else None


@dataclass(frozen=True)
class ResnetProfile:
    """``resnet50.demo`` / ``.full`` / ``.strongest``: what differs between the profiles (values: their defaults)."""

    arch: str = knob(
        help="backbone: a torchvision classification model name (resnet18 ... resnet152, "
        "efficientnet_b0, ...) or any other timm model name (convnext_tiny, efficientnet_b0.ra_in1k, "
        "vit_small_patch16_224, swin_tiny_patch4_window7_224, vit_base_patch16_siglip_224, ...)",
        nonempty=True,
    )
    weights: str = knob(
        help="none | imagenet / pretrained (the backbone's default weights: torchvision = torch "
        "cache then download; timm = models/pretrained/<hf id>, HF cache, hub) | path to a weights "
        "file (or a directory with model.safetensors for timm)",
        nonempty=True,
    )
    image_size: int = knob(help="input side in px (the cleaned JPEGs are decoded at reduced size)", lo=32, hi=1024)
    max_train_rows: int = knob(help="0 = all usable train rows; else a stratified subset", lo=0)
    epochs: int = knob(help="max training epochs", lo=1, hi=500)
    batch_size: int = knob(help="training batch size", lo=1, hi=4096)
    learning_rate: float = knob(help="peak learning rate (one-cycle schedule)", lo=0.0, hi=1.0, lo_open=True)
    weight_decay: float = knob(help="AdamW weight decay", lo=0.0, hi=1.0)
    patience: int = knob(help="early stopping: epochs without a better val weighted F1", lo=1, hi=500)

    def validate(self, key: str) -> None:
        """An unknown backbone fails at parse time, before any data is read."""
        if backbone_library(self.arch) is None:
            raise ConfigError(
                f"{key}.arch = {self.arch!r}, expected a torchvision or timm model name "
                f"(e.g. {', '.join(ARCH_EXAMPLES)})"
            )


@dataclass(frozen=True)
class ResnetConfig(ProfileView, TorchKnobs, CompileKnob, LaunchKnobs):
    """``resnet50``: shared knobs plus two profiles; ``cfg.epochs`` etc. read the selected profile."""

    profile: str = knob(
        "demo",
        "demo = small ResNet from scratch, offline CPU, minutes; full = ResNet50 ImageNet "
        "224 px (the study): `dvc exp run -S resnet50.profile=full`; strongest = ConvNeXt-Base "
        "ImageNet-22k 224 px (GPU)",
        choices=PROFILES,
    )
    rebalance: str = knob(
        "class_weights", "none | class_weights (loss) | sampler (WeightedRandomSampler)", choices=REBALANCE
    )
    use_sample_weights: bool = knob(
        True, "per-image weights from image_clean; keep_for_train=false rows are always left out"
    )
    augment: Augment = knob(Augment(), "training augmentations")
    eval_batch_size: int = knob(128, "batch size of evaluation and prediction", lo=1, hi=4096)
    num_workers: int = knob(
        0, "DataLoader worker processes (0 = decode in the main process; 8+ on a GPU box)", lo=0, hi=64
    )
    seed: int = knob(42, "seed of initialisation, augmentations, sampling and the row subset", lo=0)
    channels_last: bool = knob(
        True, "channels-last memory format on CUDA (faster convolutions with bf16/fp16); never applied on CPU"
    )
    cache_images: bool = knob(
        False,
        "decode every train/val image once at image_size into RAM (N x S x S x 3 "
        "bytes: 85k rows at 224 px = 12.8 GB) and augment from there instead of decoding "
        "the JPEGs every epoch",
    )
    demo: ResnetProfile = knob(
        ResnetProfile(
            arch="resnet18",
            weights="none",
            image_size=32,
            max_train_rows=2500,
            epochs=3,
            batch_size=64,
            learning_rate=0.002,
            weight_decay=0.0001,
            patience=2,
        ),
        "small ResNet from scratch at 32 px on a stratified subset: offline, 2 CPU cores, ~3 minutes",
    )
    full: ResnetProfile = knob(
        ResnetProfile(
            arch="resnet50",
            weights="imagenet",
            image_size=224,
            max_train_rows=0,
            epochs=10,
            batch_size=64,
            learning_rate=0.0003,
            weight_decay=0.0001,
            patience=3,
        ),
        "the study: ResNet50 with ImageNet weights at 224 px (GPU)",
    )
    strongest: ResnetProfile = knob(
        ResnetProfile(
            arch="convnext_base.fb_in22k_ft_in1k",
            weights="pretrained",
            image_size=224,
            max_train_rows=0,
            epochs=10,
            batch_size=64,
            learning_rate=0.0001,
            weight_decay=0.05,
            patience=3,
        ),
        "ConvNeXt-Base (timm, ImageNet-22k -> 1k) at 224 px (GPU); public reports ~0.69 macro F1 image-only "
        "on this catalog vs ResNet50 ~0.60",
    )


@dataclass
class ResnetModel:
    """A trained network plus the config it was trained with, its val history and row accounting."""

    net: torch.nn.Module
    config: ResnetConfig
    history: list[dict] = field(default_factory=list)
    rows: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------- frame


def load_image_frame(
    catalog: str | Path = "data/interim/catalog.parquet",
    split: str | Path = "data/interim/split.parquet",
    quality: str | Path = "data/processed/image_quality.parquet",
) -> pd.DataFrame:
    """Catalog rows (``row_id``, ``prdtypecode``) joined on ``row_id`` with their split and the
    image_clean columns; a catalog row without a quality row is a one-line error."""
    rows = read_parquet(catalog, stage_hint="ingest")[["row_id", "prdtypecode"]]
    rows = rows.merge(
        read_parquet(split, stage_hint="split")[["row_id", "split"]], on="row_id", how="inner", validate="one_to_one"
    )
    table = read_parquet(quality, stage_hint="image_clean")
    missing_cols = [c for c in QUALITY_COLUMNS if c not in table.columns]
    if missing_cols:
        raise PipelineError(f"{quality}: missing column {missing_cols[0]}; expected {', '.join(QUALITY_COLUMNS)}")
    frame = rows.merge(table[list(QUALITY_COLUMNS)], on="row_id", how="left", validate="one_to_one")
    absent = frame["clean_path"].isna()
    if absent.any():
        raise PipelineError(
            f"{quality}: no row for row_id {frame.loc[absent, 'row_id'].iloc[0]}; expected one "
            "row per catalog row (rerun `dvc repro image_clean`)"
        )
    return frame


def usable_train_rows(frame: pd.DataFrame, cfg: ResnetConfig) -> tuple[pd.DataFrame, dict]:
    """Train rows the network learns from, and the accounting of those left out and why."""
    keep = frame["keep_for_train"].fillna(False).to_numpy(dtype=bool)
    readable = frame["readable"].fillna(False).to_numpy(dtype=bool)
    counts = {
        "train_rows": int(len(frame)),
        "dropped_keep_for_train_false": int((~keep).sum()),
        "dropped_unreadable": int((keep & ~readable).sum()),
    }
    usable = frame[keep & readable]
    capped = stratified_cap(usable["prdtypecode"].to_numpy(dtype=np.int64), cfg.max_train_rows, cfg.seed)
    counts["dropped_max_train_rows"] = int(len(usable) - len(capped))
    usable = usable.iloc[capped].reset_index(drop=True)
    counts["train_rows_used"] = int(len(usable))
    return usable, counts


# ----------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Norm:
    """The input statistics a backbone was trained with: ImageNet for torchvision, the model's own for timm."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"


def backbone_norm(net: torch.nn.Module, arch: str) -> Norm:
    """timm: ``resolve_model_data_config`` (e.g. SigLIP/ViT-augreg use mean = std = 0.5, bicubic);
    torchvision: ImageNet mean/std, bilinear (unchanged)."""
    if backbone_library(arch) != "timm":
        return Norm()
    import timm.data

    data = timm.data.resolve_model_data_config(net)
    interpolation = str(data.get("interpolation", "bilinear"))
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bilinear"
    return Norm(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]), interpolation)


def build_transform(size: int, augment: Augment | None, norm: Norm | None = None):
    """Eval transform (``augment=None``): resize to ``size``; train: zoom crop, flips, rotation, colour jitter."""
    from torchvision.transforms import v2

    norm = norm or Norm()
    mode = v2.InterpolationMode(norm.interpolation)
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(norm.mean, norm.std)]
    if augment is None:
        return v2.Compose([v2.Resize((size, size), interpolation=mode, antialias=True), *tail])
    a = augment
    steps = [v2.RandomResizedCrop(size, scale=(a.zoom_min, 1.0), ratio=(0.9, 1.1), interpolation=mode, antialias=True)]
    if a.hflip:
        steps.append(v2.RandomHorizontalFlip(a.hflip))
    if a.vflip:
        steps.append(v2.RandomVerticalFlip(a.vflip))
    if a.rotation:
        steps.append(v2.RandomRotation(a.rotation, fill=255))  # product shots sit on white
    if a.brightness or a.contrast or a.saturation or a.hue:
        steps.append(v2.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue))
    return v2.Compose([*steps, *tail])


class ImageRows(torch.utils.data.Dataset):
    """Images decoded on the fly (JPEG draft mode: decoded near the target size) with label and weight."""

    def __init__(self, paths: list[str], labels: np.ndarray, weights: np.ndarray, transform, size: int):
        self.paths, self.labels, self.weights = paths, labels, weights
        self.transform, self.size = transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(_decode(self.paths[i], self.size)), int(self.labels[i]), np.float32(self.weights[i])


def _decode(path: str, size: int) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            return im.convert("RGB")
    except OSError as exc:
        raise PipelineError(f"{path}: cannot decode image ({exc}); rerun `dvc repro image_clean`") from None


class _DecodeRows(torch.utils.data.Dataset):
    """Images decoded and resized to ``size`` x ``size`` exactly as the eval transform does, as uint8 HWC arrays."""

    def __init__(self, paths: list[str], size: int, norm: Norm):
        from torchvision.transforms import v2

        self.paths, self.size = paths, size
        self.resize = v2.Resize((size, size), interpolation=v2.InterpolationMode(norm.interpolation), antialias=True)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.resize(_decode(self.paths[i], self.size)), dtype=np.uint8)


def decode_images(paths: list[str], size: int, norm: Norm, num_workers: int = 0, desc: str = "decode") -> np.ndarray:
    """Every image decoded ONCE into one uint8 array (n, size, size, 3); ``num_workers`` processes decode.

    The pixels equal what the eval transform resizes to, so val predictions are the same with or
    without the cache; training augments from these ``size`` px images instead of the larger JPEG.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    loader = torch.utils.data.DataLoader(
        _DecodeRows(paths, size, norm), batch_size=256, num_workers=num_workers, collate_fn=np.stack
    )
    start = 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=len(loader) < 2):
        out[start : start + len(batch)] = batch
        start += len(batch)
    log.info("%s: %d images decoded at %d px into %.1f MB of RAM", desc, len(paths), size, out.nbytes / 1e6)
    return out


class CachedRows(torch.utils.data.Dataset):
    """Rows whose images were decoded once (:func:`decode_images`): each epoch transforms the cached pixels.

    They are handed to the transform as a PIL image (a zero-copy wrap): on CPU, PIL's rotation and
    colour jitter were measured 2x faster than the same v2 ops on uint8 tensors (224 px).
    """

    def __init__(self, pixels: np.ndarray, paths: list[str], labels: np.ndarray, weights: np.ndarray, transform):
        self.pixels, self.paths, self.labels, self.weights, self.transform = pixels, paths, labels, weights, transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.pixels[i])), int(self.labels[i]), np.float32(self.weights[i])


def image_paths(frame: pd.DataFrame) -> list[str]:
    """``clean_path`` of every row (relative to the repository root or absolute); a missing file names its row."""
    if "clean_path" not in frame.columns:
        raise PipelineError(
            "model frame: missing column clean_path; expected the image_clean columns "
            "(data/processed/image_quality.parquet)"
        )
    paths = frame["clean_path"].astype(str).tolist()
    for row_id, path in zip(frame["row_id"].tolist(), paths):
        if not Path(path).is_file():
            raise PipelineError(
                f"row_id {row_id}, column clean_path: {path} not found; "
                "expected the cleaned image (rerun `dvc repro image_clean`)"
            )
    return paths


class ShardedWeightedSampler(torch.utils.data.Sampler):
    """``WeightedRandomSampler`` for N ranks: every rank draws the same seeded sample of ``num_samples``
    rows (seed + epoch), padded to a multiple of N, and keeps every N-th index from its rank, so the
    ranks' shares are disjoint parts of one draw of the size one process would make."""

    def __init__(self, weights: np.ndarray, num_samples: int, rank: int, size: int, seed: int):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.num_samples, self.rank, self.size, self.seed, self.epoch = num_samples, rank, size, seed, 0
        self.per_rank = math.ceil(num_samples / size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen).tolist()
        drawn += drawn[: self.per_rank * self.size - len(drawn)]
        return iter(drawn[self.rank :: self.size])


def _train_sampler(dataset, weights: np.ndarray | None, cfg: ResnetConfig, here: World):
    """The training sampler: None (the loader shuffles) or a ``WeightedRandomSampler`` in one process;
    with torchrun, each rank's disjoint share (``DistributedSampler``, or :class:`ShardedWeightedSampler`)."""
    if not here.distributed:
        if weights is None:
            return None
        gen = torch.Generator().manual_seed(cfg.seed)
        return torch.utils.data.WeightedRandomSampler(weights, len(weights), replacement=True, generator=gen)
    if weights is not None:
        return ShardedWeightedSampler(weights, len(weights), here.rank, here.size, cfg.seed)
    return torch.utils.data.DistributedSampler(
        dataset, num_replicas=here.size, rank=here.rank, shuffle=True, seed=cfg.seed
    )


def _ddp(net: torch.nn.Module, runtime: Runtime, here: World) -> torch.nn.Module:
    """``net`` wrapped for data-parallel training (DDP averages the gradients; every parameter is used).

    On CUDA its BatchNorm layers become SyncBatchNorm first: each rank sees batch_size / N rows, and
    statistics over the global batch keep the normalisation (and so the optimisation) of one process.
    torch has no CPU SyncBatchNorm, so gloo ranks normalise over their own share (DDP broadcasts rank
    0's running statistics every step).
    """
    if runtime.device == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[here.local_rank], find_unused_parameters=False
        )
    return torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=False)


def _global_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over all ranks (a copy; no gradient)."""
    import torch.distributed as dist

    total = values.detach().clone()
    dist.all_reduce(total)
    return total


def _loader(
    dataset, batch_size: int, cfg: ResnetConfig, runtime: Runtime, shuffle: bool = False, sampler=None
) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=gen,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=runtime.device == "cuda",
    )


# ------------------------------------------------------------------------------------- network


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def torchvision_head(net: torch.nn.Module) -> tuple[torch.nn.Module, str, torch.nn.Linear]:
    """``(parent, attribute, layer)`` of the classification head: the last ``Linear`` (``fc`` of a ResNet,
    ``classifier[-1]`` of EfficientNet/ConvNeXt, ``heads.head`` of ViT, ...)."""
    linears = [name for name, module in net.named_modules() if isinstance(module, torch.nn.Linear)]
    if not linears:
        raise PipelineError(
            f"{type(net).__name__}: no Linear classification head to replace; "
            "expected a torchvision classification model"
        )
    parent_name, _, attr = linears[-1].rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    return parent, attr, getattr(parent, attr)


def build_net(arch: str, weights_file: Path | None = None) -> torch.nn.Module:
    """torchvision ``arch`` with optional ImageNet/local weights and a new 27-class head."""
    import torchvision

    net = torchvision.models.get_model(arch, weights=None)
    if weights_file is not None:
        try:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            raise PipelineError(f"{weights_file}: not a {arch} state dict ({_first_line(exc)})") from None
    parent, attr, head = torchvision_head(net)
    setattr(parent, attr, torch.nn.Linear(head.in_features, N_CLASSES))
    return net


def _create_timm(arch: str, image_size: int, **kwargs) -> torch.nn.Module:
    """``timm.create_model`` with ``img_size=image_size`` for the classes that take it (ViT, DeiT, Swin,
    SigLIP/CLIP towers: position embeddings and windows depend on it), without for the others
    (ConvNeXt, EfficientNet reject the keyword before building anything)."""
    import timm

    try:
        return timm.create_model(arch, num_classes=N_CLASSES, img_size=image_size, **kwargs)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
    return timm.create_model(arch, num_classes=N_CLASSES, **kwargs)


def build_timm_net(arch: str, weights_file: Path | None = None, image_size: int = 224) -> torch.nn.Module:
    """timm ``arch`` with a new 27-class head; pretrained weights from ``weights_file`` (timm drops the old
    head, and resamples ViT position embeddings to ``image_size``)."""
    if weights_file is None:
        try:
            return _create_timm(arch, image_size, pretrained=False)
        except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
            raise PipelineError(
                f"resnet50: timm model {arch} cannot be built at image_size {image_size} "
                f"({_first_line(exc)}); try a larger image_size"
            ) from None
    missing = _TimmMissingKeys()
    builder_log = logging.getLogger("timm.models._builder")
    level = builder_log.level
    builder_log.addHandler(missing)
    builder_log.setLevel(logging.INFO)
    try:
        net = _create_timm(
            arch, image_size, pretrained=True, pretrained_cfg_overlay={"file": str(weights_file), "source": ""}
        )
    except (RuntimeError, AssertionError, OSError, KeyError, ValueError, TypeError) as exc:
        raise PipelineError(
            f"{weights_file}: not {arch} weights at image_size {image_size} ({_first_line(exc)})"
        ) from None
    finally:
        builder_log.removeHandler(missing)
        builder_log.setLevel(level)
    # timm loads non-strictly when it swaps the head: a file that matches nothing must not pass as pretrained
    head = getattr(net, "pretrained_cfg", {}).get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    body_missing = [k for k in missing.keys if not k.startswith(tuple(h + "." for h in head))]
    if body_missing:
        raise PipelineError(
            f"{weights_file}: not {arch} weights ({len(body_missing)} of "
            f"{len(net.state_dict())} tensors missing, e.g. {body_missing[0]})"
        )
    return net


class _TimmMissingKeys(logging.Handler):
    """Collects the keys timm reports missing after loading pretrained weights non-strictly."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys ("):
            self.keys += [k.strip() for k in message[len("Missing keys (") :].split(")", 1)[0].split(",") if k.strip()]


def make_net(arch: str, image_size: int, weights_file: Path | None = None) -> torch.nn.Module:
    """The 27-class network of ``arch`` from the library that owns the name (torchvision first)."""
    if backbone_library(arch) == "timm":
        return build_timm_net(arch, weights_file, image_size)
    return build_net(arch, weights_file)


def memory_format(cfg: ResnetConfig, runtime: Runtime) -> torch.memory_format:
    """channels-last only on CUDA and only when asked: CPU numerics stay those of contiguous tensors."""
    if runtime.device == "cuda" and cfg.channels_last:
        return torch.channels_last
    return torch.contiguous_format


def _autocast(runtime: Runtime):
    return torch.autocast(runtime.device, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None)


def _logits(
    net: torch.nn.Module, loader, runtime: Runtime, desc: str, fmt: torch.memory_format = torch.channels_last
) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for x, _, _ in tqdm(loader, desc=desc, leave=False, disable=len(loader) < 5):
            x = x.to(runtime.device, non_blocking=True)
            if runtime.device == "cuda":
                x = x.contiguous(memory_format=fmt)
            with _autocast(runtime):
                out.append(net(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES))


def _live(live_dir: str | Path | None):
    if not live_dir:
        return None
    from dvclive import Live

    return Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False)


def resolve_weights(cfg: ResnetConfig) -> Path | None:
    """The weights file (None for ``weights: none``); one-line PipelineError when it cannot be had."""
    from rakuten.runtime.pretrained import resolve_timm, resolve_torchvision

    if backbone_library(cfg.arch) == "timm":
        return resolve_timm(cfg.arch, cfg.weights)
    return resolve_torchvision(cfg.arch, cfg.weights)


def training_report(model: ResnetModel) -> dict:
    """What the stage writes to ``reports/training/resnet50.json``: profile, row accounting, val history."""
    cfg = model.config
    return {
        "profile": cfg.profile,
        "arch": cfg.arch,
        "library": backbone_library(cfg.arch),
        "weights": cfg.weights,
        "image_size": cfg.image_size,
        "rows": dict(model.rows),
        "history": model.history,
    }


def train(
    train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: ResnetConfig, live_dir: str | Path | None = None
) -> ResnetModel:
    """Fine-tune on the usable train rows; early stopping on val weighted F1; best epoch's weights kept.

    ``live_dir``: where dvclive writes the learning curves (None = no curves). Started by torchrun
    with N processes: DDP, each rank ``batch_size / N`` rows of its disjoint share, the loss the global
    weighted mean; rank 0 alone validates, logs and decides early stopping (broadcast to all ranks).
    """
    runtime = choose_runtime(cfg.device, cfg.precision)
    weights_file = resolve_weights(cfg)  # before any work: fails offline in one line
    here = distributed.init(runtime.device)
    batch_size = distributed.per_rank_batch(cfg.batch_size, here.size, f"resnet50.{cfg.profile}.batch_size")
    threads = set_threads(cfg.num_threads)
    usable, rows = usable_train_rows(train_frame, cfg)
    if usable.empty:
        raise PipelineError("resnet50: no usable train rows (all have keep_for_train = False or unreadable images)")
    labels = frame_labels(usable)
    sample_w = usable["sample_weight"].to_numpy(dtype=np.float64) if cfg.use_sample_weights else np.ones(len(usable))
    if (sample_w < 0).any() or not np.isfinite(sample_w).all():
        raise PipelineError(
            f"column sample_weight: row_id {usable['row_id'].iloc[int(np.argmin(sample_w))]} has "
            "a negative or non-finite weight; expected weights >= 0"
        )
    cw = class_weights(labels)
    draw_w = None
    if cfg.rebalance == "sampler":  # balance by drawing, so the loss stays unweighted by class
        draw_w = cw[labels] * sample_w
        sample_w = np.ones(len(labels))
    elif cfg.rebalance == "class_weights":
        sample_w = sample_w * cw[labels]
    log.info(
        "resnet (%s profile, %s %s, weights %s, %d px): %d train rows used %s, %d val rows on %s %s, %d CPU threads%s",
        cfg.profile,
        backbone_library(cfg.arch),
        cfg.arch,
        cfg.weights,
        cfg.image_size,
        len(usable),
        rows,
        len(val_frame),
        runtime.device,
        runtime.precision,
        threads,
        f", rank {here.rank} of {here.size}" if here.distributed else "",
    )

    seed_everything(cfg.seed)
    net = make_net(cfg.arch, cfg.image_size, weights_file).to(runtime.device)
    fmt = memory_format(cfg, runtime)
    if fmt == torch.channels_last:
        net = net.to(memory_format=fmt)
    norm = backbone_norm(net, cfg.arch)
    train_transform, eval_transform = (
        build_transform(cfg.image_size, cfg.augment, norm),
        build_transform(cfg.image_size, None, norm),
    )
    train_paths, val_paths = image_paths(usable), image_paths(val_frame)
    val_labels = frame_labels(val_frame)
    if cfg.cache_images:
        train_ds = CachedRows(
            decode_images(train_paths, cfg.image_size, norm, cfg.num_workers, "decode train"),
            train_paths,
            labels,
            sample_w,
            train_transform,
        )
        val_ds = CachedRows(
            decode_images(val_paths, cfg.image_size, norm, cfg.num_workers, "decode val"),
            val_paths,
            val_labels,
            np.ones(len(val_frame)),
            eval_transform,
        )
    else:
        train_ds = ImageRows(train_paths, labels, sample_w, train_transform, cfg.image_size)
        val_ds = ImageRows(val_paths, val_labels, np.ones(len(val_frame)), eval_transform, cfg.image_size)
    train_net = _ddp(net, runtime, here) if here.distributed else net  # DDP shares the parameters of ``net``
    net = train_net.module if here.distributed else net  # (SyncBatchNorm: a converted copy's layers)
    step_net = torch.compile(train_net) if cfg.compile else train_net  # shares the parameters of ``net``
    sampler = _train_sampler(train_ds, draw_w, cfg, here)
    train_loader = _loader(train_ds, batch_size, cfg, runtime, shuffle=True, sampler=sampler)
    val_loader = _loader(val_ds, cfg.eval_batch_size, cfg, runtime)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.learning_rate, total_steps=cfg.epochs * len(train_loader), pct_start=0.2
    )
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.precision == "fp16")
    live = _live(live_dir) if here.is_main else None
    history: list[dict] = []
    best_f1, best_state, stale = -1.0, None, 0
    for epoch in range(1, cfg.epochs + 1):
        train_net.train()
        if here.distributed:
            sampler.set_epoch(epoch)
        loss_sum, weight_sum = 0.0, 0.0
        for x, y, w in tqdm(train_loader, desc=f"resnet epoch {epoch}", leave=False, disable=not here.is_main):
            x, y, w = x.to(runtime.device, non_blocking=True), y.to(runtime.device), w.to(runtime.device)
            if runtime.device == "cuda":
                x = x.contiguous(memory_format=fmt)
            with _autocast(runtime):
                per_row = torch.nn.functional.cross_entropy(step_net(x).float(), y, reduction="none")
            denom = w.sum()
            if here.distributed:  # N x share / global weight: DDP's mean over ranks is the global weighted mean
                denom = _global_sum(denom) / here.size
            loss = (per_row * w).sum() / denom.clamp_min(1e-12)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float((per_row * w).sum().detach())
            weight_sum += float(w.sum())
        if here.distributed:  # the epoch's train loss over every rank's rows
            loss_sum, weight_sum = _global_sum(
                torch.tensor([loss_sum, weight_sum], dtype=torch.float64, device=runtime.device)
            ).tolist()
            if not here.is_main:  # rank 0 validates and decides; the others wait for its decision
                if distributed.broadcast(None):
                    break
                continue
        logits = _logits(net, val_loader, runtime, "resnet val", fmt)
        val_loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)))
        entry = {
            "epoch": epoch,
            "train_loss": round(loss_sum / max(weight_sum, 1e-12), 6),
            "val_loss": round(val_loss, 6),
            **scores(indices_to_codes(val_labels), indices_to_codes(logits.argmax(axis=1))),
        }
        history.append(entry)
        log.info(
            "resnet epoch %d: train loss %.4f, val loss %.4f, val weighted F1 %.4f",
            epoch,
            entry["train_loss"],
            entry["val_loss"],
            entry["weighted_f1"],
        )
        if live is not None:
            live.log_metric("train/loss", entry["train_loss"])
            live.log_metric("val/loss", entry["val_loss"])
            for m in ("weighted_f1", "macro_f1", "accuracy"):
                live.log_metric(f"val/{m}", entry[m])
            live.log_metric("learning_rate", optimizer.param_groups[0]["lr"])
            live.next_step()
        stop = False
        if entry["weighted_f1"] > best_f1:
            best_f1, best_state, stale = entry["weighted_f1"], copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                log.info("resnet: early stop after epoch %d (no val improvement for %d epochs)", epoch, stale)
                stop = True
        if here.distributed:
            distributed.broadcast(stop)
        if stop:
            break
    if not here.is_main:
        return ResnetModel(net=net.eval(), config=cfg, history=[], rows=rows)
    if live is not None:
        live.end()
    if here.distributed:  # the plain network one process would have trained (BatchNorm, no DDP), best weights
        net = make_net(cfg.arch, cfg.image_size).to(runtime.device)
        if fmt == torch.channels_last:
            net = net.to(memory_format=fmt)
    net.load_state_dict(best_state)
    rows["val_rows"] = int(len(val_frame))
    rows["best_epoch"] = int(max(history, key=lambda h: h["weighted_f1"])["epoch"])
    rows["epochs_run"] = len(history)
    return ResnetModel(net=net.eval(), config=cfg, history=history, rows=rows)


# ------------------------------------------------------------------------------------ inference


def _eval_rows(model: ResnetModel, frame: pd.DataFrame) -> tuple[torch.utils.data.DataLoader, Runtime]:
    """Loader of ``frame``'s images with the model's eval transform, and the runtime of the model's device."""
    cfg = model.config
    device = next(model.net.parameters()).device
    runtime = Runtime("cpu", "fp32") if device.type == "cpu" else choose_runtime("cuda", cfg.precision)
    ds = ImageRows(
        image_paths(frame),
        np.zeros(len(frame), dtype=np.int64),
        np.ones(len(frame)),
        build_transform(cfg.image_size, None, backbone_norm(model.net, cfg.arch)),
        cfg.image_size,
    )
    return _loader(ds, cfg.eval_batch_size, cfg, runtime), runtime


def predict_proba(model: ResnetModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) class probabilities in canonical order from the cleaned images (``clean_path``)."""
    if len(frame) == 0:
        return np.zeros((0, N_CLASSES))
    loader, runtime = _eval_rows(model, frame)
    fmt = memory_format(model.config, runtime)
    return softmax_proba(_logits(model.net, loader, runtime, "resnet predict", fmt))


def feature_dim(model: ResnetModel) -> int:
    """Width of :func:`embed_images`' vectors: the input of the classification head."""
    if backbone_library(model.config.arch) == "timm":
        return int(getattr(model.net, "head_hidden_size", None) or model.net.num_features)
    return int(torchvision_head(model.net)[2].in_features)


def _pooled(net: torch.nn.Module, x: torch.Tensor, is_timm: bool) -> torch.Tensor:
    """Pooled pre-logit features: timm's ``forward_head(..., pre_logits=True)``; for torchvision, the input
    of the head layer (ResNet: the pooled vector before ``fc``), caught with a forward hook."""
    if is_timm:
        return net.forward_head(net.forward_features(x), pre_logits=True)
    seen: list[torch.Tensor] = []
    handle = torchvision_head(net)[2].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return seen[0]


def embed_images(model: ResnetModel, frame: pd.DataFrame) -> np.ndarray:
    """float32 (n, :func:`feature_dim`) pooled pre-logit features of the cleaned images (eval transform,
    batches of ``eval_batch_size``, on the model's device): the image half of a joint text+image model."""
    dim = feature_dim(model)
    if len(frame) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    loader, runtime = _eval_rows(model, frame)
    fmt = memory_format(model.config, runtime)
    is_timm = backbone_library(model.config.arch) == "timm"
    net, out = model.net.eval(), []
    with torch.inference_mode():
        for x, _, _ in tqdm(loader, desc="resnet embed", leave=False, disable=len(loader) < 5):
            x = x.to(runtime.device, non_blocking=True)
            if runtime.device == "cuda":
                x = x.contiguous(memory_format=fmt)
            with _autocast(runtime):
                out.append(_pooled(net, x, is_timm).float().reshape(len(x), -1).cpu().numpy())
    return np.concatenate(out).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------- persistence


def save(model: ResnetModel, directory: str | Path) -> None:
    """``weights.pt`` (state dict) and ``resnet.json`` (config, val history, row accounting); atomic."""
    with atomic_path(directory, is_dir=True) as tmp:
        torch.save({k: v.cpu() for k, v in model.net.state_dict().items()}, tmp / "weights.pt")
        write_meta(tmp / "resnet.json", model.config, model.history, model.rows)
        distributed.drop_launch_knobs(tmp / "resnet.json")  # how it was launched is not part of the model


def load(directory: str | Path) -> ResnetModel:
    """Load a model saved by :func:`save` onto CUDA when present, else CPU."""
    directory = Path(directory)
    meta = read_meta(directory / "resnet.json", directory / "weights.pt", "ResNet", NAME)
    cfg = parse_section(
        ResnetConfig, distributed.with_launch_knobs(meta["config"]), NAME, source=str(directory / "resnet.json")
    )
    set_threads(cfg.num_threads)  # predictions with the numerics the model was trained with, on any machine
    net = make_net(cfg.arch, cfg.image_size)  # timm: same img_size kwargs, so the saved state dict fits
    net.load_state_dict(torch.load(directory / "weights.pt", map_location="cpu", weights_only=True))
    runtime = choose_runtime("auto", "auto")
    return ResnetModel(
        net=net.to(runtime.device).eval(), config=cfg, history=meta.get("history", []), rows=meta.get("rows", {})
    )

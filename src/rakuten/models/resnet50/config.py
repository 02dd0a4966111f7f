"""The ``resnet50`` params section: the knobs, the three profiles, the augmentations; and the trained-model record.

Why apart from the code that uses them: the stage, ``rakuten predict`` and the params schema tests read
the config without loading any training code. An unknown backbone name fails here, at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rakuten.core.config import ConfigError, ProfileView, knob
from rakuten.models.resnet50.backbones import backbone_library
from rakuten.runtime.knobs import CompileKnob, EvalBatchKnob, LaunchKnobs, TorchKnobs

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
class ResnetConfig(ProfileView, TorchKnobs, CompileKnob, EvalBatchKnob, LaunchKnobs):
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

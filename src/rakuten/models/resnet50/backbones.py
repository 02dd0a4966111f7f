"""The backbone factory: any torchvision or timm classification model with a new 27-class head.

torchvision names go to torchvision (ImageNet weights from :func:`rakuten.runtime.pretrained.resolve_torchvision`),
any other timm name to timm (its own weights from :func:`rakuten.runtime.pretrained.resolve_timm`, and
``img_size = image_size`` for the classes that take it, so ViT/DeiT/Swin/SigLIP towers run at small demo sizes).
Each backbone also says which input statistics it was trained with (:func:`backbone_norm`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rakuten.contracts.classes import N_CLASSES
from rakuten.core.errors import PipelineError

if TYPE_CHECKING:
    from rakuten.models.resnet50.config import ResnetConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def resolve_weights(cfg: ResnetConfig) -> Path | None:
    """The weights file (None for ``weights: none``); one-line PipelineError when it cannot be had."""
    from rakuten.runtime.pretrained import resolve_timm, resolve_torchvision

    if backbone_library(cfg.arch) == "timm":
        return resolve_timm(cfg.arch, cfg.weights)
    return resolve_torchvision(cfg.arch, cfg.weights)

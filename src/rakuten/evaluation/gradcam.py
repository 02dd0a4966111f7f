"""Grad-CAM of the image model: where it looked for a class, drawn over the photo.

A module of its own (not in :mod:`rakuten.evaluation.explain`) so that the ``evaluate`` stage, whose report shows
Grad-CAM examples, depends on the image model's code only, not on the text models'.

The heat map weights the last convolutional feature map (larger than 1x1) by the class's gradient,
through exactly the eval transform the model predicts with. Every call leaves the model as it found it
(hooks removed; train/eval mode, ``requires_grad`` and ``.grad`` of every parameter restored), because a
service reuses the loaded model for predictions afterwards.
"""

from __future__ import annotations

import base64
import io
import logging
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from PIL import Image

from rakuten.contracts.classes import N_CLASSES
from rakuten.core.errors import PipelineError

if TYPE_CHECKING:
    from rakuten.models.resnet50.config import ResnetModel

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- helpers


def check_class(class_index: int) -> int:
    """A canonical class index, or a one-line error (a negative index would silently wrap)."""
    if not 0 <= int(class_index) < N_CLASSES:
        raise PipelineError(
            f"class_index {class_index}: expected 0 <= index < {N_CLASSES} "
            "(a position in rakuten.contracts.classes.CLASS_CODES)"
        )
    return int(class_index)


@contextmanager
def grad_enabled_on(net: torch.nn.Module) -> Iterator[None]:
    """Gradients on for one attribution pass, parameters frozen meanwhile (only activation gradients are
    needed: a backward through the weights would double the cost), then the module exactly as found:
    train/eval flag, each parameter's ``requires_grad`` and ``.grad``, as the service predicts with it next."""
    was_training = net.training
    params = [(p, p.requires_grad, p.grad) for p in net.parameters()]
    try:
        for p, _, _ in params:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad
        net.train(was_training)


# ------------------------------------------------------------------------------------ Grad-CAM

# per network and input size: the module Grad-CAM hooks (found once, with a traced forward pass)
_TARGETS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[int, str]]" = weakref.WeakKeyDictionary()


def _is_transformer(net: torch.nn.Module) -> bool:
    """Self-attention anywhere (ViT, DeiT, Swin, SigLIP, torchvision ViT/Swin/MaxViT): their features are
    token sequences (or NHWC windows), not the NCHW map Grad-CAM weights by channel."""
    return any(isinstance(m, torch.nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in net.modules())


def _trace(net: torch.nn.Module, size: int) -> list[tuple[str, torch.nn.Module, tuple[int, ...], int]]:
    """``(name, module, output shape, calls)`` of every submodule in the order its forward finished, on a
    blank ``size`` px image (eval mode, no gradient; hooks removed and mode restored afterwards)."""
    records: list[list] = []
    index: dict[int, int] = {}

    def hook(name: str):
        def record(module, inputs, output):
            if id(module) in index:
                records[index[id(module)]][3] += 1
                return
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            index[id(module)] = len(records)
            records.append([name, module, shape, 1])

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in net.named_modules() if name]
    was_training = net.training
    try:
        device = next(net.parameters()).device
        with torch.inference_mode():
            net.eval()(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return [tuple(r) for r in records]


def find_target_layer(net: torch.nn.Module, arch: str, image_size: int) -> str:
    """Name of the module Grad-CAM hooks: the last NCHW feature map with a spatial extent (``layer4[-1]`` of a
    torchvision ResNet, ``features[-1]`` of EfficientNet/ConvNeXt/VGG, ``stages[-1]``/``bn2`` of timm CNNs).

    Found generically from a traced forward pass rather than per family: the last module to finish with a
    4-D output larger than 1 x 1, pooling layers aside. A stage whose map is 1 x 1 (a ResNet's ``layer4``
    at the demo's 32 px) would give a constant heat map, so it gives way to the last stage with a larger
    map. Transformer backbones (and token-sequence nets) -> one-line PipelineError.
    """
    known = _TARGETS.setdefault(net, {})
    if image_size in known:
        return known[image_size]
    unsupported = PipelineError(
        f"Grad-CAM is not supported for arch {arch}: a transformer backbone has no convolutional feature map to weight"
    )
    if _is_transformer(net):
        raise unsupported
    records = _trace(net, image_size)
    maps = [
        i
        for i, (_, module, shape, calls) in enumerate(records)
        if len(shape) == 4
        and calls == 1
        and not isinstance(module, torch.nn.Identity)
        and "Pool" not in type(module).__name__
    ]  # a module run twice (a shared ReLU) would confuse the hooks
    spatial = [i for i in maps if records[i][2][2] * records[i][2][3] > 1]
    if not maps or any(len(shape) == 3 for _, _, shape, _ in records[(spatial or maps)[-1] :]):
        raise unsupported  # token sequences after the last map (MLP-Mixer-like)
    name, module, shape, _ = records[(spatial or maps)[-1]]
    if isinstance(module, torch.nn.Sequential) and len(module) and not isinstance(module[-1], torch.nn.Identity):
        name = f"{name}.{len(module) - 1}"  # the stage's last block: same output, the layer people name
    log.debug("grad-cam %s: target layer %s (%dx%d map)", arch, name, shape[2], shape[3])
    known[image_size] = name
    return name


def _eval_input(model: ResnetModel, image_path: str | Path) -> torch.Tensor:
    """(1, 3, S, S) tensor of the cleaned image exactly as ``resnet50.predict_proba`` feeds it (JPEG draft
    decode + eval transform), on the net's device."""
    from rakuten.models.resnet50.backbones import backbone_norm
    from rakuten.models.resnet50.data import ImageRows, build_transform

    if not Path(image_path).is_file():
        raise PipelineError(f"{image_path}: image not found; expected a cleaned image (data/processed/images)")
    cfg = model.config
    transform = build_transform(cfg.image_size, None, backbone_norm(model.net, cfg.arch))
    rows = ImageRows([str(image_path)], np.zeros(1, dtype=np.int64), np.ones(1), transform, cfg.image_size)
    return rows[0][0].unsqueeze(0).to(next(model.net.parameters()).device)


def gradcam(model: ResnetModel, image_path: str | Path, class_index: int) -> np.ndarray:
    """Grad-CAM heat map of ``class_index`` on the cleaned image: float32 (S, S) in [0, 1], S = image_size.

    Only the input requires grad during the pass (the parameters are frozen meanwhile: the hooked map still
    gets its gradient, without a backward through every weight); hooks, ``requires_grad``, parameter
    gradients and the train/eval flag are restored afterwards.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class_index = check_class(class_index)
    net = model.net
    layer = net.get_submodule(find_target_layer(net, model.config.arch, model.config.image_size))
    x = _eval_input(model, image_path).float().requires_grad_(True)
    with grad_enabled_on(net):
        cam = GradCAM(model=net, target_layers=[layer])
        try:  # not `with cam`: its __exit__ swallows IndexError and prints
            heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(class_index)])[0]
        finally:
            cam.activations_and_grads.release()
            cam.outputs = None  # drop the retained graph now
    return np.clip(np.nan_to_num(heat.astype(np.float32, copy=False)), 0.0, 1.0)


def overlay(image_path: str | Path, heat: np.ndarray, size: int | None = None) -> Image.Image:
    """The heat map over the photo (``show_cam_on_image``, RGB), ``size`` px square (default: the heat map's
    size). The photo is resized from the cleaned image, not from the model's small input, so a large
    overlay stays sharp; the heat map is upsampled bilinearly."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise PipelineError(f"heat map of shape {heat.shape}: expected a 2-D (H, W) array")
    width, height = (heat.shape[1], heat.shape[0]) if size is None else (int(size), int(size))
    try:
        with Image.open(image_path) as im:
            photo = im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    except OSError as exc:
        raise PipelineError(f"{image_path}: cannot read the image ({exc})") from None
    mask = np.asarray(Image.fromarray(np.clip(heat, 0, 1), mode="F").resize((width, height), Image.Resampling.BILINEAR))
    rgb = np.asarray(photo, dtype=np.float32) / 255.0
    return Image.fromarray(show_cam_on_image(rgb, np.clip(mask, 0.0, 1.0), use_rgb=True))


def data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    """``data:image/png;base64,...`` (or jpeg) for HTML reports; the same image always gives the same string
    (pixels only: no metadata, ICC profile or timestamp is written)."""
    fmt = fmt.upper().replace("JPG", "JPEG")
    if fmt not in ("PNG", "JPEG"):
        raise PipelineError(f"data_uri format {fmt!r}: expected PNG or JPEG")
    mode = "RGB" if fmt == "JPEG" or image.mode not in ("RGB", "RGBA", "L") else image.mode
    clean = Image.frombytes(mode, image.size, image.convert(mode).tobytes())  # a fresh image: no .info carried
    buffer = io.BytesIO()
    if fmt == "PNG":
        clean.save(buffer, format="PNG", optimize=False, compress_level=6)
    else:
        clean.save(buffer, format="JPEG", quality=90, optimize=False, progressive=False)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

"""The trained image model at work: class probabilities and pooled pre-logit features of cleaned images.

Both come from one pass over the images through the eval transform, in batches of ``eval_batch_size``, on
the device the network sits on (fp32 on CPU; the config's precision on CUDA). On CPU a row's outputs are a
function of that row alone, whatever the rows beside it (:func:`row_logits`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rakuten.contracts.classes import N_CLASSES
from rakuten.models.resnet50.backbones import backbone_library, backbone_norm, torchvision_head
from rakuten.models.resnet50.config import ResnetConfig, ResnetModel
from rakuten.models.resnet50.data import ImageRows, build_transform, make_loader
from rakuten.models.resnet50.frame import image_paths
from rakuten.runtime.torch_setup import Runtime, choose_runtime, softmax_proba


def memory_format(cfg: ResnetConfig, runtime: Runtime) -> torch.memory_format:
    """channels-last only on CUDA and only when asked: CPU numerics stay those of contiguous tensors."""
    if runtime.device == "cuda" and cfg.channels_last:
        return torch.channels_last
    return torch.contiguous_format


def batch_logits(
    net: torch.nn.Module,
    loader,
    runtime: Runtime,
    desc: str,
    fmt: torch.memory_format = torch.channels_last,
    is_timm: bool = False,
) -> np.ndarray:
    """``net``'s float32 logits over every batch of ``loader`` (eval mode, no gradients); on CPU each row's
    logits are its own (:func:`row_logits`), so the val pass of an epoch gives the bits of the final
    predictions, whatever the batch and the thread count."""
    net.eval()
    head = classifier(net, is_timm)
    out = []
    with torch.inference_mode():
        for x, _, _ in tqdm(loader, desc=desc, leave=False, disable=len(loader) < 5):
            x = x.to(runtime.device, non_blocking=True)
            if runtime.device == "cuda":
                x = x.contiguous(memory_format=fmt)
            with runtime.autocast():
                pooled = _pooled(net, x, is_timm).reshape(len(x), -1)
                out.append(row_logits(head, pooled, runtime.device == "cpu").float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES))


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
    return make_loader(ds, cfg.eval_batch_size, cfg, runtime), runtime


def predict_proba(model: ResnetModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) class probabilities in canonical order from the cleaned images (``clean_path``)."""
    return predict_and_embed(model, frame)[0]


def feature_dim(model: ResnetModel) -> int:
    """Width of :func:`embed_images`' vectors: the input of the classification head."""
    if backbone_library(model.config.arch) == "timm":
        return int(getattr(model.net, "head_hidden_size", None) or model.net.num_features)
    return int(torchvision_head(model.net)[2].in_features)


def classifier(net: torch.nn.Module, is_timm: bool) -> torch.nn.Module:
    """The layer that maps pooled pre-logit features to the 27 logits (timm's classifier; torchvision's last
    ``Linear``)."""
    return net.get_classifier() if is_timm else torchvision_head(net)[2]


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


def row_logits(head: torch.nn.Module, features: torch.Tensor, row_invariant: bool) -> torch.Tensor:
    """The head's logits of pooled features; with ``row_invariant``, each row alone.

    Why one row at a time on CPU: a (batch x features) matrix product rounds each row's logits
    differently with the batch's size (measured: up to 1.3e-7 in the probabilities), so a product would
    score differently alone, in a stream's chunk, in the service's batch or on another worker. The
    convolutions before it already run image by image on CPU (ATen's, oneDNN being off), so the pooled
    features are the same bits whatever the batch; the head is 0.1 % of the FLOPs."""
    if not row_invariant:
        return head(features)
    return torch.cat([head(features[i : i + 1]) for i in range(len(features))])


def predict_and_embed(model: ResnetModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass per image for both outputs: (n, 27) probabilities and float32 (n, :func:`feature_dim`)
    pooled pre-logit features (eval transform, batches of ``eval_batch_size``, on the model's device).

    The features are the image half of a joint text+image model (:mod:`rakuten.models.embed`); computing
    them with the probabilities spares ``rakuten predict`` a second pass of the network over every image.
    On CPU a row's outputs depend on that row only (:func:`row_logits`)."""
    dim = feature_dim(model)
    if len(frame) == 0:
        return np.zeros((0, N_CLASSES)), np.zeros((0, dim), dtype=np.float32)
    loader, runtime = _eval_rows(model, frame)
    fmt = memory_format(model.config, runtime)
    is_timm = backbone_library(model.config.arch) == "timm"
    net = model.net.eval()
    head = classifier(net, is_timm)
    logits, features = [], []
    with torch.inference_mode():
        for x, _, _ in tqdm(loader, desc="resnet", leave=False, disable=len(loader) < 5):
            x = x.to(runtime.device, non_blocking=True)
            if runtime.device == "cuda":
                x = x.contiguous(memory_format=fmt)
            with runtime.autocast():
                pooled = _pooled(net, x, is_timm).reshape(len(x), -1)
                logits.append(row_logits(head, pooled, runtime.device == "cpu").float().cpu().numpy())
            features.append(pooled.float().cpu().numpy())
    return softmax_proba(np.concatenate(logits)), np.concatenate(features).astype(np.float32, copy=False)


def embed_images(model: ResnetModel, frame: pd.DataFrame) -> np.ndarray:
    """float32 (n, :func:`feature_dim`) pooled pre-logit features of the cleaned images (see
    :func:`predict_and_embed`): the image half of a joint text+image model."""
    return predict_and_embed(model, frame)[1]

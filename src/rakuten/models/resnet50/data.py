"""Images in, tensors out: the transforms, the datasets (decoded on the fly or from a decode-once cache), the loader.

The eval transform only resizes and normalises (with the backbone's own statistics, :class:`Norm`);
the train transform adds the study's augmentations (:class:`rakuten.models.resnet50.config.Augment`).
JPEGs are decoded in draft mode, near the target size, which is most of the cost saved at 32 px.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rakuten.core.errors import PipelineError
from rakuten.models.resnet50.backbones import Norm
from rakuten.models.resnet50.config import Augment, ResnetConfig
from rakuten.runtime.torch_setup import Runtime

log = logging.getLogger(__name__)


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


def make_loader(
    dataset, batch_size: int, cfg: ResnetConfig, runtime: Runtime, shuffle: bool = False, sampler=None
) -> torch.utils.data.DataLoader:
    """A loader of ``dataset`` seeded by ``cfg.seed`` (its shuffling and its workers' seeds), pinned on CUDA."""
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

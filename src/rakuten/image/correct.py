"""Corrections applied to a flagged image: border crop/zoom, red-cast correction, sharpening, resize.

All functions are pure (BGR uint8 in, BGR uint8 out). The detectors in :mod:`quality` decide
which ones run; the study's choices are the defaults in params (zoom up to 50%, saturation -15%
as an alternative to the grey-world balance, unsharp mask for blur).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def to_square(image: np.ndarray, fill: int = 255) -> np.ndarray:
    """Pad the short side (centred, white by default) so resizing never distorts the product."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(
        image, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=(fill, fill, fill)
    )


def zoom_box(box: tuple[int, int, int, int], side: int, max_zoom: float, margin: float) -> tuple[int, int, int, int]:
    """Square crop ``(x0, y0, x1, y1)`` around a content box in a ``side`` x ``side`` image.

    The crop is the content's larger dimension plus ``margin`` (of the image side) on each side,
    but never smaller than ``side / (1 + max_zoom)``: the product is enlarged by at most
    ``1 + max_zoom`` (the study: "un zoom pouvant atteindre jusqu'à 50 %"), so the output keeps a
    usable resolution. The crop is centred on the content and shifted to stay inside the image.
    """
    x0, y0, x1, y1 = box
    crop = max(x1 - x0, y1 - y0) + 2 * margin * side
    crop = int(min(side, max(crop, math.ceil(side / (1.0 + max_zoom)))))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left = int(round(min(max(cx - crop / 2.0, 0), side - crop)))
    top = int(round(min(max(cy - crop / 2.0, 0), side - crop)))
    return left, top, left + crop, top + crop


def correct_red_cast(image: np.ndarray, method: str, saturation_reduction: float = 0.15) -> np.ndarray:
    """Reduce a red cast with one of the study's methods.

    ``gray_world``: scale each channel so its mean equals the grey mean (the study's "ajustement
    automatique pour équilibrer les intensités des canaux R, G et B"); ``saturation``: lower HSV
    saturation by ``saturation_reduction`` (the study: -15%); ``equalize``: per-channel histogram
    equalisation; ``none``: unchanged.
    """
    if method == "none":
        return image
    if method == "gray_world":
        means = np.array(cv2.mean(image)[:3])
        gains = means.mean() / np.maximum(means, 1e-6)
        return np.clip(image.astype(np.float32) * gains.astype(np.float32), 0, 255).astype(np.uint8)
    if method == "saturation":
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 1] *= 1.0 - saturation_reduction
        return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
    if method == "equalize":
        return cv2.merge([cv2.equalizeHist(c) for c in cv2.split(image)])
    raise ValueError(f"unknown red-cast method {method!r}")


def unsharp_mask(image: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """``image + amount * (image - gaussian(image, sigma))``, the classic sharpening filter."""
    if amount <= 0:
        return image
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)


def shrink_interpolation(source_side: int, target_side: int) -> int:
    """OpenCV filter for shrinking ``source_side`` to ``target_side`` px.

    Area averaging from 2x on; below 2x (e.g. a 500 px JPEG decoded at half scale, 250 -> 224)
    each output pixel overlaps at most two source pixels per axis, so bilinear weights are
    nearly the area weights (mean difference 0.24 grey levels measured on the bench catalog)
    while OpenCV's area filter at a non-integer ratio costs ~1 ms against 0.2 ms.
    """
    return cv2.INTER_AREA if source_side >= 2 * target_side else cv2.INTER_LINEAR


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to ``size`` (:func:`shrink_interpolation` when shrinking, bicubic
    when enlarging)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrink = image.shape[0] > size
    interpolation = shrink_interpolation(image.shape[0], size) if shrink else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def placeholder(size: int, grey: int = 128) -> np.ndarray:
    """The neutral grey image written for a row without a usable picture."""
    return np.full((size, size, 3), grey, np.uint8)

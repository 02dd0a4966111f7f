"""Measurements of one decoded image: sharpness, red cast, uniform border (no corrections here).

Each function is a pure measurement on a BGR uint8 array, so the thresholds that turn a score
into a flag live in params and the scores themselves land in the quality table for inspection.
"""
from __future__ import annotations

import cv2
import numpy as np

from rakuten.image.correct import shrink_interpolation


def blur_score(image: np.ndarray, max_side: int | None = None) -> float:
    """Variance of the Laplacian of the grey image (the study's sharpness measure; low = blurry).

    Images larger than ``max_side`` are first downscaled to it (the same filter as the output
    resize, :func:`rakuten.image.correct.shrink_interpolation`), so the score
    is measured at the resolution the image model will see and one threshold serves sources of
    any size; smaller images are never upscaled (upscaling would itself blur).
    """
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if max_side and max(grey.shape) > max_side:
        scale = max_side / max(grey.shape)
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=shrink_interpolation(max(grey.shape), max_side))
    # float32 holds the Laplacian of uint8 exactly; meanStdDev gives the population variance in double
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    return float(std[0, 0] ** 2)


def red_ratio(image: np.ndarray) -> float:
    """Mean red over the mean of green and blue (the study: a cast when red is 10-15% above)."""
    means = cv2.mean(image)[:3]  # B, G, R
    return float(means[2] / max((means[0] + means[1]) / 2.0, 1e-6))


def frame_background(image: np.ndarray, mode: str, tolerance: int) -> np.ndarray | None:
    """The colour of a uniform border, or None when the outer frame is not such a border.

    The candidate colour is the per-channel median of the 1-px outer frame (so a product that
    touches one edge does not hide the border). ``mode='white'`` accepts only near-white
    (every channel >= 255 - tolerance, the study's case); ``'uniform'`` any colour that at least
    60% of the frame pixels share within ``tolerance``.
    """
    frame = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]]).astype(np.int16)
    colour = np.median(frame, axis=0)
    if mode == "white":
        return colour if colour.min() >= 255 - tolerance else None
    share = (np.abs(frame - colour).max(axis=1) <= tolerance).mean()
    return colour if share >= 0.6 else None


def content_box(image: np.ndarray, mode: str = "white", tolerance: int = 16,
                min_line_fraction: float = 0.01) -> tuple[tuple[int, int, int, int], float]:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the content inside a uniform border,
    and the border's share of the image area (0 when there is no border).

    A row/column belongs to the content when more than ``min_line_fraction`` of its pixels differ
    from the border colour by more than ``tolerance`` in some channel (robust to JPEG ringing and
    a few specks). A blank image (no content at all) reports no border: there is nothing to crop.
    """
    h, w = image.shape[:2]
    full = (0, 0, w, h)
    colour = frame_background(image, mode, tolerance)
    if colour is None:
        return full, 0.0
    # background = every channel within `tolerance` of the (truncated) border colour; cv2.inRange
    # builds that mask in one pass (~10x faster than the int16 difference it replaces, same mask)
    centre = colour.astype(np.int16).astype(np.float64)
    background = cv2.inRange(image, centre - tolerance, centre + tolerance) > 0
    rows = np.flatnonzero((w - np.count_nonzero(background, axis=1)) / w > min_line_fraction)
    cols = np.flatnonzero((h - np.count_nonzero(background, axis=0)) / h > min_line_fraction)
    if not len(rows) or not len(cols):
        return full, 0.0
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    fraction = 1.0 - (box[2] - box[0]) * (box[3] - box[1]) / float(w * h)
    return box, float(fraction)

"""Measurements of one decoded image: sharpness, red cast, uniform border (no corrections here).

Each function is a pure measurement on a BGR uint8 array, so the thresholds that turn a score
into a flag live in params and the scores themselves land in the quality table for inspection.
"""

from __future__ import annotations

import cv2
import numpy as np

from rakuten.image.correct import shrink_interpolation

#: side (px) at which sharpness is measured: larger pictures are area-averaged down to it, so a
#: blur covering the same share of the picture reads the same whatever the source size. 112 is
#: half the default output side (224): the output picture is then an exact 2 x 2 average, and a
#: 128 px sample picture is shrunk too (its JPEG noise averaged like a 500 px picture's).
BLUR_SIDE = 112


def blur_score(image: np.ndarray, max_side: int | None = None) -> float:
    """Sharpness (low = blurry): variance of the Laplacian over the mean gradient magnitude, at
    :data:`BLUR_SIDE` px.

    The study flagged blurry photos by the variance of the Laplacian (the energy of the finest
    detail) at the resolution the model sees; this keeps that measure and makes one threshold
    hold for every source size by changing two things.

    * **A fixed scale.** The picture is first shrunk to ``max_side`` (the output side) exactly as
      :func:`rakuten.image.correct.resize_square` does, so the output picture that ``process``
      reuses measures the same; then, in float (rounding would add noise that a blurred picture
      lacks), area-averaged to ``BLUR_SIDE`` on its long side. Smaller pictures are measured as
      they are (upscaling would itself blur). Before, the score was taken at ``max_side``: a
      planted blur of 2.5-4.5% of the side spans 3-6 px at 128 px but 6-10 px at 224 px, and the
      clean side of the threshold rested on pixel noise, which the reduced decode and the
      downscale of a 500 px JPEG average away (and a re-encode or a channel scaling lowers):
      at 500 px, re-encoded near copies and red-cast pictures scored 25-40, under the threshold
      (40), so blur precision fell to 0.87-0.93 (0.97 on the 128 px sample).
    * **Per unit of edge.** The Laplacian variance also grows with the number of edges, so a clean
      picture with a few large flat shapes reads as blurry. Dividing by the mean Sobel gradient
      magnitude (total variation per pixel: contrast x edge length) removes the edge density: for
      edges of contrast ``C`` blurred over ``s`` px the ratio is about ``0.14 C / s**3``, still
      the Laplacian's steep preference for fine detail, and only linear in contrast. Measures
      normalised by the gradient *energy*, or comparing the picture with a re-blurred copy
      (Crete-Roffet's blur effect), were tried and rejected: they read a blurred fine texture (a
      sinusoid has no edge width) as sharp; smoothing before the Laplacian lost the sharp side.

    Measured through ``clean_image`` on generated catalogs (``rakuten.data.sample``): planted
    blurs score <= 2.0 at 128 and 500 px (up to 84,916 pictures) and <= 6.2 on 64 px sources
    (measured at 64 px); every other picture, re-encoded near copies included, >= 14.7 at
    128 px, >= 20 at 500 px, >= 24.8 at 64 px. Like the study's measure it is fooled by noise
    added after a blur (noise reads as detail). Cost ~0.08 ms for a 224 px output picture,
    ~0.15 ms for a 250 px one (one core).
    """
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if max_side and max(grey.shape) > max_side:  # first the output picture, as correct.resize_square makes it
        grey = _shrink(grey, max_side, shrink_interpolation(max(grey.shape), max_side))
    grey = grey.astype(np.float32)  # then in float: rounding to uint8 adds noise that a blurred picture lacks
    if max(grey.shape) > BLUR_SIDE:
        grey = _shrink(grey, BLUR_SIDE, cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)  # /8: a unit step reads 0.5 on its 2 pixels
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    edge = cv2.mean(cv2.magnitude(gx, gy))[0]
    # a flat picture has neither edges nor detail: 0, the blurriest score
    return float(std[0, 0] ** 2 / edge) if edge > 1e-6 else 0.0


def _shrink(image: np.ndarray, side: int, interpolation: int) -> np.ndarray:
    scale = side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


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


def content_box(
    image: np.ndarray, mode: str = "white", tolerance: int = 16, min_line_fraction: float = 0.01
) -> tuple[tuple[int, int, int, int], float]:
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

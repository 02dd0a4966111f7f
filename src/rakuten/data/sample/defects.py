"""The planted image defects and the plan of which rows get them.

Exact duplicates, near duplicates (re-encoded, cropped, resized; same and cross class), blur, red
cast, and the product drawn small inside a wide white border: the ground truth that ``defects.json``
records, so the cleaning stages can be scored for precision and recall.
"""

from __future__ import annotations

import cv2
import numpy as np

from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.images import red_ratio, render_product, scale_channels

DEFECT_TYPES = ("exact_duplicates", "near_duplicates", "blur", "red_cast", "border")


def add_red_cast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Raise red and lower green/blue until red is 18-35% above them (the study saw 10-15%+)."""
    target = rng.uniform(1.18, 1.35)
    gain, out = 1.0, img
    for _ in range(4):  # saturation moves the ratio: correct the gain on the clipped result
        gain *= float(np.sqrt(target / red_ratio(out)))
        out = scale_channels(img, 1 / gain, gain)
    return out


def add_blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian blur of sigma 2.5-4.5% of the side; strong blurs run on a copy shrunk so sigma
    is ~3 px there (the same look, ~15x cheaper than a 130-tap kernel at 500 px)."""
    s = img.shape[0]
    sigma = s * rng.uniform(0.025, 0.045)
    factor = max(1, int(sigma // 3))
    if factor == 1:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    small = max(8, round(s / factor))
    out = cv2.GaussianBlur(cv2.resize(img, (small, small), interpolation=cv2.INTER_AREA), (0, 0), sigma * small / s)
    return cv2.resize(out, (s, s), interpolation=cv2.INTER_LINEAR)


def add_border(code: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The product drawn at 35-55% of the frame inside a wide white border."""
    inner = max(8, int(size * rng.uniform(0.35, 0.55)))
    product = render_product(code, inner, rng)
    canvas = np.full((size, size, 3), 255, np.uint8)
    y, x = (int(rng.integers(0, size - inner + 1)) for _ in range(2))
    canvas[y : y + inner, x : x + inner] = product
    return canvas


def near_duplicate_of(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-encoded, slightly cropped/resized, slightly brightened copy (what marketplaces produce)."""
    s = img.shape[0]
    crop = int(s * rng.uniform(0.0, 0.05))
    out = img[crop : s - crop, crop : s - crop] if crop else img
    out = cv2.resize(out, (s, s), interpolation=cv2.INTER_AREA)
    shift = np.clip(np.arange(256) + int(rng.integers(-8, 9)), 0, 255).astype(np.uint8)
    out = cv2.LUT(out, shift)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 80))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def plan_image_defects(labels: np.ndarray, cfg: SampleConfig, rng: np.random.Generator):
    """Choose disjoint rows for each defect; duplicates point at a clean source row.

    A source is a uniform draw among the clean rows of the same class (or of the other classes)
    not yet used as a source: the next row of its class in a random order, so a draw costs O(classes)
    and the plan stays linear in rows. Returns per-row defect names (``""`` for clean) and source
    rows (-1 when none).
    """
    defect, clean = _defect_rows(len(labels), cfg, rng)
    return defect, _duplicate_sources(labels, defect, clean, rng)


def _defect_rows(n: int, cfg: SampleConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-row defect names (``""`` for clean), disjoint rows in a random order at the planted rates,
    and the clean rows left (in that random order)."""
    defect = np.full(n, "", dtype=object)
    order = rng.permutation(n)
    p = cfg.planted
    rates = {
        "exact_duplicates": p.exact_duplicate_rate,
        "near_duplicates": p.near_duplicate_rate,
        "blur": p.blur_rate,
        "red_cast": p.red_cast_rate,
        "border": p.border_rate,
    }
    counts = {name: int(round(rate * n)) for name, rate in rates.items()}
    pos = 0
    for name in DEFECT_TYPES:
        rows = order[pos : pos + counts[name]]
        defect[rows] = name
        pos += counts[name]
    return defect, order[pos:]


def _duplicate_sources(
    labels: np.ndarray, defect: np.ndarray, clean: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Per-row source row of each exact or near duplicate (-1 elsewhere): an unused clean row of the
    same class (80% of exact, 70% of near duplicates) or of another class, any clean row when none is
    left there."""
    source = np.full(len(labels), -1, dtype=np.int64)
    codes, clean_class = np.unique(labels[clean], return_inverse=True)
    queues = [clean[clean_class == k] for k in range(len(codes))]  # each class's clean rows, random order
    taken = np.zeros(len(codes), np.int64)
    left = np.array([len(q) for q in queues], np.int64)
    class_of = {int(c): k for k, c in enumerate(codes)}
    for name, same_class_share in (("exact_duplicates", 0.8), ("near_duplicates", 0.7)):
        for row in np.flatnonzero(defect == name):
            same = rng.random() < same_class_share
            weights = _source_weights(left, class_of.get(int(labels[row]), -1), same)
            if weights.sum() == 0:  # nothing unused left there: any clean row
                source[row] = int(clean[rng.integers(len(clean))])
                continue
            k = int(np.searchsorted(np.cumsum(weights), rng.integers(weights.sum()), side="right"))
            source[row] = int(queues[k][taken[k]])
            taken[k] += 1
            left[k] -= 1
    return source


def _source_weights(left: np.ndarray, own: int, same: bool) -> np.ndarray:
    """How many unused clean rows each class offers a duplicate of class index ``own`` (-1: a class
    with no clean row): its own class only when ``same``, every other class otherwise."""
    weights = np.zeros_like(left)
    if same and own >= 0:
        weights[own] = left[own]
    elif not same:
        weights[:] = left
        if own >= 0:
            weights[own] = 0
    return weights

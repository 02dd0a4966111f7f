"""Class-dependent product photos: shape, hue and texture by class, sensor noise, red balance.

Related classes get nearby hues and the same shape, and a share of renders borrows a sibling's shape,
so a CNN can learn the classes but not perfectly. Speed (98,728 images of 500 px in minutes on 2
cores): pixel noise is a slice of a fixed bank of rounded N(0, 7) values at an offset drawn from the
row's RNG (drawing 750k normals per image cost more than everything else together), added with
saturating integer ops; channel means come from ``cv2.mean``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from rakuten.contracts.classes import CLASS_CODES
from rakuten.data.sample import vocabulary as V
from rakuten.data.sample.labels import sibling

# each class: (hue in OpenCV's 0-179 scale, shape kind, texture kind); families share hues and shapes
_SHAPES = ("circle", "rectangle", "triangle", "ellipse", "polygon", "stripes")
_TEXTURES = ("dots", "lines", "checks", "plain")


def class_visual(code: int) -> tuple[int, str, str]:
    """The visual signature of a class: related classes get nearby hues and the same shape."""
    i = CLASS_CODES.index(code)
    family_index = next((k for k, f in enumerate(V.FAMILIES) if code in f["classes"]), len(V.FAMILIES))
    hue = (family_index * 28 + (i % 4) * 7) % 180
    shape = _SHAPES[(family_index + i) % len(_SHAPES)]
    texture = _TEXTURES[i % len(_TEXTURES)]
    return hue, shape, texture


def _hsv_colour(hue: int, rng: np.random.Generator) -> tuple[int, int, int]:
    hsv = np.uint8([[[hue % 180, rng.integers(120, 230), rng.integers(110, 230)]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _draw_shape(img: np.ndarray, shape: str, colour, rng: np.random.Generator) -> None:
    s = img.shape[0]
    c = (int(s * rng.uniform(0.4, 0.6)), int(s * rng.uniform(0.4, 0.6)))
    r = int(s * rng.uniform(0.3, 0.45))
    if shape == "circle":
        cv2.circle(img, c, r, colour, -1)
    elif shape == "rectangle":
        cv2.rectangle(img, (c[0] - r, c[1] - int(r * 0.8)), (c[0] + r, c[1] + int(r * 0.8)), colour, -1)
    elif shape == "triangle":
        pts = np.array([[c[0], c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    elif shape == "ellipse":
        cv2.ellipse(img, c, (r, int(r * 0.55)), float(rng.uniform(0, 180)), 0, 360, colour, -1)
    elif shape == "polygon":
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        pts = np.stack([c[0] + r * np.cos(angles), c[1] + r * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(img, [pts], colour)
    else:  # stripes
        width = max(2, s // 12)
        for x in range(int(s * 0.1), int(s * 0.9), width * 2):
            cv2.rectangle(img, (x, int(s * 0.1)), (x + width, int(s * 0.9)), colour, -1)


def _texture(img: np.ndarray, texture: str, rng: np.random.Generator) -> None:
    s = img.shape[0]
    colour = tuple(int(v) for v in rng.integers(0, 255, 3))
    step = max(4, s // int(rng.integers(6, 12)))
    if texture == "dots":
        for y in range(step // 2, s, step):
            for x in range(step // 2, s, step):
                cv2.circle(img, (x, y), max(1, step // 5), colour, -1)
    elif texture == "lines":
        for k in range(-s, s, step):
            cv2.line(img, (k, 0), (k + s, s), colour, max(1, s // 64))
    elif texture == "checks":
        for y in range(0, s, step):
            cv2.line(img, (0, y), (s, y), colour, 1)
            cv2.line(img, (y, 0), (y, s), colour, 1)


# pixel noise: a fixed bank of rounded N(0, NOISE_SIGMA) values, built once per process from a
# constant seed; an image takes a contiguous slice at an offset drawn from its row's RNG, so the
# noise depends on (seed, row) only, never on the process that renders the row
NOISE_SIGMA = 7.0
_NOISE_BANK_SIZE = 1 << 24  # 16 M values: one 1024 px image uses 3.1 M; offsets rarely coincide
_NOISE_BANK_SEED = 20_240_607


@functools.lru_cache(maxsize=1)
def _noise_bank() -> tuple[np.ndarray, np.ndarray]:
    """The bank as its positive and negative parts (uint8), so that adding it is two saturating
    OpenCV ops: ``(img + pos) - neg`` equals ``clip(img + noise)`` since one part is 0 everywhere."""
    rng = np.random.default_rng(_NOISE_BANK_SEED)
    pos, neg = np.empty(_NOISE_BANK_SIZE, np.uint8), np.empty(_NOISE_BANK_SIZE, np.uint8)
    step = 1 << 20  # in slices: no 64 MB float temporaries in every worker
    for start in range(0, _NOISE_BANK_SIZE, step):
        noise = np.clip(np.rint(rng.standard_normal(step, dtype=np.float32) * NOISE_SIGMA), -255, 255)
        pos[start : start + step] = np.maximum(noise, 0)
        neg[start : start + step] = np.maximum(-noise, 0)
    return pos, neg


def add_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor-like noise, in place (no new 750 KB buffer to fault in): ``img`` plus rounded
    N(0, 7) per pixel and channel, clipped to 0-255. Returns ``img``."""
    pos, neg = _noise_bank()
    n = img.size
    offset = int(rng.integers(0, _NOISE_BANK_SIZE - n + 1))
    cv2.add(img, pos[offset : offset + n].reshape(img.shape), dst=img)
    return cv2.subtract(img, neg[offset : offset + n].reshape(img.shape), dst=img)


def render_product(code: int, size: int, rng: np.random.Generator, overlap: float = 0.35) -> np.ndarray:
    """A BGR product photo whose content depends on the class, filling most of the frame.

    With probability ``overlap`` the shape comes from a sibling class: a CNN can learn the classes,
    but not perfectly.
    """
    hue, shape, texture = class_visual(code)
    if rng.random() < overlap:
        _, shape, texture = class_visual(sibling(code, rng))
    base = int(rng.integers(90, 200))
    row = np.clip(base + np.linspace(-25, 25, size, dtype=np.float32), 0, 255).astype(np.uint8)  # gradient
    img = np.empty((size, size, 3), np.uint8)
    img[:] = np.repeat(row[:, None], 3, axis=1)  # copying a (size, 3) row: 50x faster than a stride-0 broadcast
    _texture(img, texture, rng)
    _draw_shape(img, shape, _hsv_colour(hue + int(rng.integers(-6, 7)), rng), rng)
    for _ in range(int(rng.integers(1, 4))):  # small distractors of any colour
        p = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, p, int(size * rng.uniform(0.03, 0.08)), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return balance_red(add_noise(img, rng))


def red_ratio(img: np.ndarray) -> float:
    """Mean red over the mean of green and blue (BGR input)."""
    b, g, r, _ = cv2.mean(np.ascontiguousarray(img))
    return float(r / max((b + g) / 2, 1e-6))


_LEVELS = np.arange(256, dtype=np.float64)


def scale_channels(img: np.ndarray, blue_green: float, red: float, in_place: bool = False) -> np.ndarray:
    """``img`` with blue and green times ``blue_green`` and red times ``red`` (rounded, saturated),
    as a per-channel look-up table: a third of the cost of a float multiply over the pixels."""
    lut = np.stack([_LEVELS * blue_green, _LEVELS * blue_green, _LEVELS * red], axis=-1)
    lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(img, lut, dst=img) if in_place else cv2.LUT(img, lut)


def balance_red(img: np.ndarray, limit: float = 1.04) -> np.ndarray:
    """Scale the red channel down (in place) so a clean image never looks red-cast by accident."""
    ratio = red_ratio(img)
    return img if ratio <= limit else scale_channels(img, 1.0, limit / ratio, in_place=True)

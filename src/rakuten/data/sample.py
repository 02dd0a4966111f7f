"""Deterministic generator of a synthetic catalog in exactly the official challenge layout.

Why: the real files cannot be redistributed, yet every stage, test and benchmark needs input with
the real shape and the real problems. The generator plants the study's problems with a known
ground truth (``defects.json``) so cleaning stages can be scored for precision and recall:

* the 27 codes in the official proportions; French titles from class vocabularies plus words shared
  within confusable families, brands, colours, sizes and units; a share of "hard" rows whose words
  come from a sibling class (the image still shows the true class, so fusion has something to add);
* HTML descriptions with entities, missing in ~35% of rows; ~15% English, ~3% German, ~1% other
  languages; a few mojibake rows; exact duplicate texts, some with a conflicting label;
* class-dependent images (shape, hue, texture, with overlap between families) and planted defects:
  exact duplicate files, near duplicates (re-encoded, cropped, resized; same and cross class),
  blur, red cast, product drawn small inside a wide white border.

Every row draws from its own RNG seeded by ``(seed, row)``, so output is byte-identical for a seed
whatever the number of worker processes.

Speed (the full-size catalog, 98,728 images of 500 px, must take minutes on 2 cores): pixel noise
is a slice of a fixed bank of rounded N(0, 7) values at an offset drawn from the row's RNG (drawing
750k normals per image cost more than everything else together), added with saturating integer
ops; channel means come from ``cv2.mean``; strong blurs run at reduced size; workers write their
JPEG files themselves (no image bytes through the pipe); titles and descriptions use Python's
``random.Random`` per row, ~10x cheaper per call than numpy's generators for scalar draws.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from typing import ClassVar

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from rakuten.contracts.classes import CLASS_CODES, class_proportions
from rakuten.core.config import knob
from rakuten.core.io import atomic_path
from rakuten.core.parallel import process_pool
from rakuten.data import vocabulary as V

log = logging.getLogger(__name__)

#: text draws use Python's generator (cheap scalar draws), image draws numpy's (array draws)
AnyRng = random.Random | np.random.Generator

DEFECT_TYPES = ("exact_duplicates", "near_duplicates", "blur", "red_cast", "border")


@dataclass(frozen=True)
class Planted:
    """Rates of the properties the generator plants, mimicking the real catalog (fixed, not params)."""

    missing_description_rate: float = 0.35
    english_rate: float = 0.15
    german_rate: float = 0.03
    other_language_rate: float = 0.01
    hard_row_rate: float = 0.22
    duplicate_text_rate: float = 0.011
    conflicting_duplicate_share: float = 0.2
    mojibake_rate: float = 0.01
    exact_duplicate_rate: float = 0.02
    near_duplicate_rate: float = 0.03
    blur_rate: float = 0.04
    red_cast_rate: float = 0.04
    border_rate: float = 0.05
    jpeg_quality: int = 90


@dataclass(frozen=True)
class SampleConfig:
    """``sample``: size and seed of the synthetic catalog (generated only when ``data.source`` is sample)."""

    n_train: int = knob(5000, "labelled rows (the real catalog: 84916)", lo=2 * len(CLASS_CODES))
    n_test: int = knob(800, "official test rows (the real catalog: 13812)", lo=0)
    image_size: int = knob(128, "image side in px (the real catalog: 500)", lo=32, hi=1024)
    seed: int = knob(42, "generator seed: same seed, byte-identical catalog", lo=0)
    n_jobs: int = knob(2, "worker processes (output does not depend on it)", lo=1, hi=256)

    #: what the generator plants: fixed by its design (mimicking the real catalog), not params
    planted: ClassVar[Planted] = Planted()


# ---------------------------------------------------------------- labels and languages


def proportional_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` codes in the official proportions (largest-remainder allocation, every class >= 1), shuffled."""
    quota = class_proportions() * n
    counts = np.maximum(np.floor(quota).astype(int), 1)
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")  # equal remainders: class order, on any CPU
    i = 0
    while counts.sum() < n:
        counts[order[i % len(order)]] += 1
        i += 1
    labels = np.repeat(np.array(CLASS_CODES), counts)
    return rng.permutation(labels)


@functools.lru_cache(maxsize=None)
def _family_of(code: int) -> tuple[dict, ...]:
    return tuple(f for f in V.FAMILIES if code in f["classes"])


@functools.lru_cache(maxsize=None)
def _siblings(code: int) -> tuple[int, ...]:
    return tuple(sorted({c for f in _family_of(code) for c in f["classes"]} - {code}))


def _sibling(code: int, rng: AnyRng) -> int:
    """A random class of the same confusable family (``code`` itself when it has none)."""
    siblings = _siblings(code)
    if not siblings:
        return code
    if isinstance(rng, random.Random):
        return rng.choice(siblings)
    return siblings[int(rng.integers(len(siblings)))]


def assign_languages(labels: np.ndarray, cfg: SampleConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-row language code: fr, en, de, and es/it for a few rows of classes that have such titles."""
    u = rng.random(len(labels))
    langs = np.full(len(labels), "fr", dtype=object)
    langs[u < cfg.planted.english_rate + cfg.planted.german_rate] = "de"
    langs[u < cfg.planted.english_rate] = "en"
    eligible = np.isin(labels, V.OTHER_LANGUAGE_CLASSES["es"]) & (langs == "fr")
    other = eligible & (rng.random(len(labels)) < cfg.planted.other_language_rate / max(eligible.mean(), 1e-9))
    langs[other] = np.where(rng.random(other.sum()) < 0.5, "es", "it")
    return langs


# ---------------------------------------------------------------- text


def _pick(rng: random.Random, words: list[str], k: int) -> list[str]:
    return rng.sample(words, min(k, len(words)))


def _text_rng(seed: int, row: int) -> random.Random:
    """The row's text generator: seeded by ``(seed, row)`` only (rows < 2**32)."""
    return random.Random((seed << 32) | row)


def make_title(code: int, lang: str, hard: bool, rng: random.Random) -> str:
    """A product title: class words (or a sibling's when ``hard``), family words, brand, colour, size."""
    if lang in V.OTHER_LANGUAGE_TITLES:
        idx = V.OTHER_LANGUAGE_CLASSES[lang].index(code)
        return V.OTHER_LANGUAGE_TITLES[lang][idx]
    source = _sibling(code, rng) if hard else code
    words = _pick(rng, V.CLASS_WORDS[source][lang], rng.randrange(1, 3))
    if hard and rng.random() < 0.5:
        words += _pick(rng, V.CLASS_WORDS[code][lang], 1)
    for family in _family_of(code):
        if rng.random() < 0.6:
            words += _pick(rng, family[lang], 1)
    glue = V.TITLE_GLUE[lang]
    parts: list[str] = []
    rng.shuffle(words)
    for i, w in enumerate(words):
        if i and rng.random() < 0.7:
            parts.append(rng.choice(glue))
        parts.append(w)
    if rng.random() < 0.4:
        parts.insert(0, rng.choice(V.BRANDS))
    if rng.random() < 0.3:
        parts.append(rng.choice(V.COLOURS[lang]))
    if rng.random() < 0.4:
        parts.append(f"{rng.randrange(1, 250)} {rng.choice(V.UNITS)}")
    if lang != "fr" and rng.random() < 0.8:  # titles long enough to carry their language
        parts += [rng.choice(glue), rng.choice(glue)]
    title = " ".join(parts)
    return title[0].upper() + title[1:]


def make_description(code: int, lang: str, hard: bool, rng: random.Random) -> str:
    """An HTML description of 2-5 template sentences; entities for some accents and apostrophes."""
    if lang in V.OTHER_LANGUAGE_TITLES:
        lang_sentences = V.OTHER_LANGUAGE_TITLES[lang]
        body = [str(s) + "." for s in _pick(rng, lang_sentences, 2)]
    else:
        source = _sibling(code, rng) if hard and rng.random() < 0.7 else code
        words = V.CLASS_WORDS[source][lang] + V.CLASS_WORDS[code][lang][:2]
        body = []
        for template in _pick(rng, V.DESCRIPTION_SENTENCES[lang], rng.randrange(2, 6)):
            w1, w2 = _pick(rng, words, 2)
            body.append(
                template.format(
                    w1=w1, w2=w2, n=rng.randrange(2, 300), u=rng.choice(V.UNITS), c=rng.choice(V.COLOURS[lang])
                )
            )
    style = rng.randrange(0, 4)
    if style == 0:
        html = "<p>" + " ".join(body) + "</p>"
    elif style == 1:
        html = "<br />".join(body)
    elif style == 2:
        html = "<b>" + body[0] + "</b><ul>" + "".join(f"<li>{s}</li>" for s in body[1:]) + "</ul>"
    else:
        html = " ".join(body)
    if rng.random() < 0.5:
        for char, entity in V.HTML_ENTITIES.items():
            if char != "&":
                html = html.replace(char, entity)
    if rng.random() < 0.1:
        html += " &nbsp;&amp; plus"
    return html


def mojibake(text: str) -> str:
    """UTF-8 bytes mis-read as Latin-1 ("é" -> "Ã©"), the real catalog's encoding damage."""
    return text.encode("utf-8").decode("latin-1")


# ---------------------------------------------------------------- images

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
        _, shape, texture = class_visual(_sibling(code, rng))
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


def _scale_channels(img: np.ndarray, blue_green: float, red: float, in_place: bool = False) -> np.ndarray:
    """``img`` with blue and green times ``blue_green`` and red times ``red`` (rounded, saturated),
    as a per-channel look-up table: a third of the cost of a float multiply over the pixels."""
    lut = np.stack([_LEVELS * blue_green, _LEVELS * blue_green, _LEVELS * red], axis=-1)
    lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(img, lut, dst=img) if in_place else cv2.LUT(img, lut)


def balance_red(img: np.ndarray, limit: float = 1.04) -> np.ndarray:
    """Scale the red channel down (in place) so a clean image never looks red-cast by accident."""
    ratio = red_ratio(img)
    return img if ratio <= limit else _scale_channels(img, 1.0, limit / ratio, in_place=True)


def add_red_cast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Raise red and lower green/blue until red is 18-35% above them (the study saw 10-15%+)."""
    target = rng.uniform(1.18, 1.35)
    gain, out = 1.0, img
    for _ in range(4):  # saturation moves the ratio: correct the gain on the clipped result
        gain *= float(np.sqrt(target / red_ratio(out)))
        out = _scale_channels(img, 1 / gain, gain)
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


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------- plan + render


def _row_rng(seed: int, row: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, row, salt])


def _render_clean(seed: int, row: int, code: int, size: int) -> np.ndarray:
    return render_product(code, size, _row_rng(seed, row, 1))


def render_row(task: tuple) -> bytes:
    """JPEG bytes of one row's image according to its planned defect (pure; safe in a worker)."""
    seed, row, code, size, quality, defect, source_row, source_code = task
    rng = _row_rng(seed, row, 2)
    if defect == "exact_duplicates":
        return encode_jpeg(_render_clean(seed, source_row, source_code, size), quality)
    if defect == "near_duplicates":
        return encode_jpeg(near_duplicate_of(_render_clean(seed, source_row, source_code, size), rng), quality)
    if defect == "border":
        return encode_jpeg(add_border(code, size, rng), quality)
    img = _render_clean(seed, row, code, size)
    if defect == "blur":
        img = add_blur(img, rng)
    elif defect == "red_cast":
        img = add_red_cast(img, rng)
    return encode_jpeg(img, quality)


def render_to_file(job: tuple[str, tuple]) -> int:
    """Render ``job = (path, task)`` and write the JPEG to ``path``; the byte count goes back.

    Why: workers write their files themselves, so ~100 KB per image never crosses a pipe and the
    parent (a third process on 2 cores) only counts.
    """
    path, task = job
    blob = render_row(task)
    with open(path, "wb") as fh:
        fh.write(blob)
    return len(blob)


def render_all(jobs: list[tuple[str, tuple]], n_jobs: int) -> int:
    """Write every job's image (``n_jobs`` processes), with a progress bar; returns total bytes."""
    total = 0
    if n_jobs == 1 or len(jobs) < 2:
        for job in tqdm(jobs, desc="sample images", unit="img"):
            total += render_to_file(job)
        return total
    # chunks of <= 64 images (~0.2 s at 500 px): a smooth bar and balanced workers at the end
    chunksize = max(1, min(64, len(jobs) // (n_jobs * 8)))
    # OpenCV on one thread while the workers are forked: they already use every core, and a child
    # must never touch (or resize: that hangs in pthread_cond_destroy) a thread pool whose threads
    # stayed in the parent
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with process_pool(n_jobs) as pool:
            sizes = pool.map(render_to_file, jobs, chunksize=chunksize)  # submits all: forked workers start here
            cv2.setNumThreads(threads)
            try:
                for size in tqdm(sizes, total=len(jobs), desc="sample images", unit="img"):
                    total += size
            except BaseException:  # interrupted: drop queued chunks before the temporary output is removed
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        cv2.setNumThreads(threads)
    return total


def plan_image_defects(labels: np.ndarray, cfg: SampleConfig, rng: np.random.Generator):
    """Choose disjoint rows for each defect; duplicates point at a clean source row.

    A source is a uniform draw among the clean rows of the same class (or of the other classes)
    not yet used as a source: the next row of its class in a random order, so a draw costs O(classes)
    and the plan stays linear in rows. Returns per-row defect names (``""`` for clean) and source
    rows (-1 when none).
    """
    n = len(labels)
    defect = np.full(n, "", dtype=object)
    source = np.full(n, -1, dtype=np.int64)
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
    clean = order[pos:]
    codes, clean_class = np.unique(labels[clean], return_inverse=True)
    queues = [clean[clean_class == k] for k in range(len(codes))]  # each class's clean rows, random order
    taken = np.zeros(len(codes), np.int64)
    left = np.array([len(q) for q in queues], np.int64)
    class_of = {int(c): k for k, c in enumerate(codes)}
    for name, same_class_share in (("exact_duplicates", 0.8), ("near_duplicates", 0.7)):
        for row in np.flatnonzero(defect == name):
            same = rng.random() < same_class_share
            own = class_of.get(int(labels[row]), -1)
            weights = np.zeros_like(left)
            if same and own >= 0:
                weights[own] = left[own]
            elif not same:
                weights[:] = left
                if own >= 0:
                    weights[own] = 0
            if weights.sum() == 0:  # nothing unused left there: any clean row
                source[row] = int(clean[rng.integers(len(clean))])
                continue
            k = int(np.searchsorted(np.cumsum(weights), rng.integers(weights.sum()), side="right"))
            source[row] = int(queues[k][taken[k]])
            taken[k] += 1
            left[k] -= 1
    return defect, source


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    ids = np.unique(rng.integers(low, high, int(n * 1.2) + 10))
    return rng.permutation(ids)[:n]


def generate_tables(cfg: SampleConfig):
    """Build the X/Y tables, the image plan and the ground truth (no files written)."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_train + cfg.n_test
    labels = np.concatenate(
        [
            proportional_labels(cfg.n_train, rng),
            proportional_labels(cfg.n_test, rng) if cfg.n_test else np.array([], int),
        ]
    )
    langs = assign_languages(labels, cfg, rng)
    hard = rng.random(n) < cfg.planted.hard_row_rate
    has_description = rng.random(n) >= cfg.planted.missing_description_rate
    designation, description = [], []
    for i, (code, lang, is_hard, described) in enumerate(
        zip(labels.tolist(), langs.tolist(), hard.tolist(), has_description.tolist())
    ):
        row_rng = _text_rng(cfg.seed, i)
        designation.append(make_title(code, lang, is_hard, row_rng))
        description.append(make_description(code, lang, is_hard, row_rng) if described else None)
    # exact duplicate texts within train (a share with a conflicting label from a sibling class)
    n_dup = int(round(cfg.planted.duplicate_text_rate * cfg.n_train))
    dup_rows = rng.choice(cfg.n_train, size=2 * n_dup, replace=False)
    duplicate_texts, conflicting = [], []
    for src, dst in zip(dup_rows[:n_dup], dup_rows[n_dup:]):
        src, dst = int(src), int(dst)
        designation[dst], description[dst], langs[dst] = designation[src], description[src], langs[src]
        if rng.random() < cfg.planted.conflicting_duplicate_share:
            labels[dst] = _sibling(int(labels[src]), rng)
            conflicting.append([src, dst])
        else:
            labels[dst] = labels[src]
        duplicate_texts.append([src, dst])
    dup_dst = {d for _, d in duplicate_texts}
    # mojibake on French rows with accents (never on duplicated texts, to keep both truths exact)
    mojibake_rows = []
    for i in np.flatnonzero(rng.random(n) < cfg.planted.mojibake_rate):
        if langs[i] == "fr" and int(i) not in dup_dst and any(c in designation[i] for c in "éèàçêô"):
            designation[i] = mojibake(designation[i])
            mojibake_rows.append(int(i))
    defect, source = plan_image_defects(labels, cfg, rng)
    imageid = _unique_ids(rng, n, 1_000_000, 1_400_000_000)
    productid = _unique_ids(rng, n, 100_000, 4_300_000_000)
    index = np.arange(n)
    x = pd.DataFrame(
        {"designation": designation, "description": description, "productid": productid, "imageid": imageid},
        index=index,
    )
    return (
        x,
        labels,
        langs,
        hard,
        defect,
        source,
        {
            "duplicate_texts": duplicate_texts,
            "conflicting_duplicate_texts": conflicting,
            "mojibake_rows": mojibake_rows,
        },
    )


def image_file_name(imageid: int, productid: int) -> str:
    return f"image_{imageid}_product_{productid}.jpg"


def image_tasks(cfg: SampleConfig, labels: np.ndarray, defect: np.ndarray, source: np.ndarray) -> list[tuple]:
    """One :func:`render_row` task per row (plain Python values: cheap to pickle to a worker)."""
    label_list, source_list = labels.tolist(), source.tolist()
    return [
        (
            cfg.seed,
            i,
            label_list[i],
            cfg.image_size,
            cfg.planted.jpeg_quality,
            defect[i],
            source_list[i],
            label_list[source_list[i]] if source_list[i] >= 0 else -1,
        )
        for i in range(len(label_list))
    ]


def write_sample(cfg: SampleConfig, out_dir: str | os.PathLike) -> dict:
    """Write the catalog to ``out_dir`` (atomically, as a whole) and return a summary."""
    x, labels, langs, hard, defect, source, text_truth = generate_tables(cfg)
    n_train = cfg.n_train
    rel = ["image_train" if i < n_train else "image_test" for i in range(len(x))]
    files = [
        f"images/{d}/{image_file_name(int(iid), int(pid))}" for d, iid, pid in zip(rel, x["imageid"], x["productid"])
    ]
    tasks = image_tasks(cfg, labels, defect, source)
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / "images" / "image_train").mkdir(parents=True)
        (tmp / "images" / "image_test").mkdir(parents=True)
        x.iloc[:n_train].to_csv(tmp / "X_train_update.csv")
        pd.DataFrame({"prdtypecode": labels[:n_train]}, index=x.index[:n_train]).to_csv(tmp / "Y_train_CVw08PX.csv")
        x.iloc[n_train:].to_csv(tmp / "X_test_update.csv")
        image_bytes = render_all([(str(tmp / path), task) for path, task in zip(files, tasks)], cfg.n_jobs)
        truth = ground_truth(files, labels, langs, hard, defect, source, text_truth, n_train, cfg)
        (tmp / "defects.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    log.info("wrote %d train + %d test rows (%.0f MB of images) to %s", n_train, cfg.n_test, image_bytes / 1e6, out_dir)
    return {k: (len(v) if isinstance(v, list) else v) for k, v in truth["image_defects"].items()}


def ground_truth(files, labels, langs, hard, defect, source, text_truth, n_train, cfg) -> dict:
    """The ``defects.json`` document: every planted defect, keyed by file or by row (X index)."""
    groups: dict[str, dict[int, list[int]]] = {"exact_duplicates": {}, "near_duplicates": {}}
    for row in np.flatnonzero(source >= 0):
        groups[defect[row]].setdefault(int(source[row]), [int(source[row])]).append(int(row))
    cross = {
        kind: sum(1 for rows in g.values() if len({int(labels[r]) for r in rows}) > 1) for kind, g in groups.items()
    }
    as_files = {kind: sorted([files[r] for r in rows] for rows in g.values()) for kind, g in groups.items()}
    return {
        # n_jobs never changes the output, so it is not recorded
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "n_jobs"}, **asdict(cfg.planted)},
        "image_defects": {
            "exact_duplicates": as_files["exact_duplicates"],
            "near_duplicates": as_files["near_duplicates"],
            "blur": sorted(files[i] for i in np.flatnonzero(defect == "blur")),
            "red_cast": sorted(files[i] for i in np.flatnonzero(defect == "red_cast")),
            "border": sorted(files[i] for i in np.flatnonzero(defect == "border")),
        },
        "cross_class_duplicate_groups": cross,
        "languages": {lang: [int(i) for i in np.flatnonzero(langs == lang)] for lang in sorted(set(langs))},
        "hard_rows": [int(i) for i in np.flatnonzero(hard)],
        **text_truth,
    }

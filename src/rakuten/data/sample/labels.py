"""Class labels in the official proportions, confusable families, and each row's language.

Why a module: titles, descriptions, images and the duplicate plan all borrow from a sibling class of
the same family (the real catalog's confusions); they share one definition of who is a sibling.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from rakuten.contracts.classes import CLASS_CODES, class_proportions
from rakuten.data.sample import vocabulary as V
from rakuten.data.sample.config import SampleConfig

#: text draws use Python's generator (cheap scalar draws), image draws numpy's (array draws)
AnyRng = random.Random | np.random.Generator


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
def family_of(code: int) -> tuple[dict, ...]:
    """The confusable families (:data:`vocabulary.FAMILIES`) that hold ``code``."""
    return tuple(f for f in V.FAMILIES if code in f["classes"])


@functools.lru_cache(maxsize=None)
def siblings(code: int) -> tuple[int, ...]:
    """The other classes of ``code``'s families, sorted."""
    return tuple(sorted({c for f in family_of(code) for c in f["classes"]} - {code}))


def sibling(code: int, rng: AnyRng) -> int:
    """A random class of the same confusable family (``code`` itself when it has none)."""
    found = siblings(code)
    if not found:
        return code
    if isinstance(rng, random.Random):
        return rng.choice(found)
    return found[int(rng.integers(len(found)))]


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

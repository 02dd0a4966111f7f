"""The catalog's tables (X, labels, languages, hard rows, image plan) and its text ground truth.

One generator seeded by ``seed`` draws everything that spans rows (labels, languages, the rows that
get a planted problem, the ids), in a fixed order; each row's texts come from the row's own
generator, so the tables are the same whatever else runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.defects import plan_image_defects
from rakuten.data.sample.labels import assign_languages, proportional_labels, sibling
from rakuten.data.sample.texts import make_description, make_title, mojibake, text_rng


def generate_tables(cfg: SampleConfig):
    """Build the X/Y tables, the image plan and the ground truth (no files written).

    Returns ``(x, labels, langs, hard, defect, source, text_truth)``.
    """
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
    designation, description = _texts(cfg.seed, labels, langs, hard, has_description)
    duplicate_texts, conflicting = _plant_duplicate_texts(cfg, designation, description, labels, langs, rng)
    mojibake_rows = _plant_mojibake(cfg, designation, langs, {d for _, d in duplicate_texts}, rng)
    defect, source = plan_image_defects(labels, cfg, rng)
    imageid = _unique_ids(rng, n, 1_000_000, 1_400_000_000)
    productid = _unique_ids(rng, n, 100_000, 4_300_000_000)
    x = pd.DataFrame(
        {"designation": designation, "description": description, "productid": productid, "imageid": imageid},
        index=np.arange(n),
    )
    text_truth = {
        "duplicate_texts": duplicate_texts,
        "conflicting_duplicate_texts": conflicting,
        "mojibake_rows": mojibake_rows,
    }
    return x, labels, langs, hard, defect, source, text_truth


def _texts(
    seed: int, labels: np.ndarray, langs: np.ndarray, hard: np.ndarray, has_description: np.ndarray
) -> tuple[list[str], list[str | None]]:
    """Every row's title and description (None where it has none), from the row's own generator."""
    designation, description = [], []
    for i, (code, lang, is_hard, described) in enumerate(
        zip(labels.tolist(), langs.tolist(), hard.tolist(), has_description.tolist())
    ):
        row_rng = text_rng(seed, i)
        designation.append(make_title(code, lang, is_hard, row_rng))
        description.append(make_description(code, lang, is_hard, row_rng) if described else None)
    return designation, description


def _plant_duplicate_texts(
    cfg: SampleConfig,
    designation: list[str],
    description: list[str | None],
    labels: np.ndarray,
    langs: np.ndarray,
    rng: np.random.Generator,
) -> tuple[list[list[int]], list[list[int]]]:
    """Copy the texts of some train rows onto others (in place), a share with a conflicting label from
    a sibling class; returns the ``[source, copy]`` pairs, all and conflicting."""
    n_dup = int(round(cfg.planted.duplicate_text_rate * cfg.n_train))
    dup_rows = rng.choice(cfg.n_train, size=2 * n_dup, replace=False)
    duplicate_texts, conflicting = [], []
    for src, dst in zip(dup_rows[:n_dup], dup_rows[n_dup:]):
        src, dst = int(src), int(dst)
        designation[dst], description[dst], langs[dst] = designation[src], description[src], langs[src]
        if rng.random() < cfg.planted.conflicting_duplicate_share:
            labels[dst] = sibling(int(labels[src]), rng)
            conflicting.append([src, dst])
        else:
            labels[dst] = labels[src]
        duplicate_texts.append([src, dst])
    return duplicate_texts, conflicting


def _plant_mojibake(
    cfg: SampleConfig, designation: list[str], langs: np.ndarray, copies: set[int], rng: np.random.Generator
) -> list[int]:
    """Mojibake on French titles with accents (in place), never on a duplicated text's copy (to keep
    both truths exact); returns the rows changed."""
    rows = []
    for i in np.flatnonzero(rng.random(len(designation)) < cfg.planted.mojibake_rate):
        if langs[i] == "fr" and int(i) not in copies and any(c in designation[i] for c in "éèàçêô"):
            designation[i] = mojibake(designation[i])
            rows.append(int(i))
    return rows


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct ids in ``[low, high)``, in random order."""
    ids = np.unique(rng.integers(low, high, int(n * 1.2) + 10))
    return rng.permutation(ids)[:n]

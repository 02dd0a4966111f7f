"""Planted label noise: a share of the labelled rows whose label is switched to a sibling class.

Why: the ``label_audit`` stage flags likely mislabelled training rows; scoring it needs rows whose true
label is known to differ from the given one. A switch goes to a class of the same confusable family
(:func:`~rakuten.data.sample.labels.sibling`), the mistake a human labeller makes, never to an
unrelated class that any model would catch.

The draw has a generator of its own, seeded by ``(seed, LABEL_NOISE_STREAM)`` and run after everything
else, so the noise changes ``Y_train`` only: titles, images, ids and every other planted defect are
byte-identical to a catalog without noise, and images and the other truths keep the true label. Rows of
a planted duplicate text are never switched, so the duplicate and conflicting-duplicate truths stay exact.
"""

from __future__ import annotations

import numpy as np

from rakuten.data.sample.labels import sibling, siblings

#: the second seed word of the noise's own generator (any constant: it only keeps the stream apart)
LABEL_NOISE_STREAM = 0x1AB5E1


def noise_candidates(labels: np.ndarray, n_train: int, protected: set[int]) -> np.ndarray:
    """Labelled rows (X index < ``n_train``) whose class has a sibling and that are not ``protected``."""
    return np.array(
        [i for i in range(n_train) if i not in protected and siblings(int(labels[i]))],
        dtype=np.int64,
    )


def plant_label_noise(
    labels: np.ndarray, n_train: int, rate: float, seed: int, protected: set[int]
) -> tuple[np.ndarray, list[dict[str, int]]]:
    """``(given, records)``: a copy of ``labels`` with ``round(rate * n_train)`` labelled rows switched to a
    sibling class (fewer if fewer rows can be), and ``{row, true, given}`` per switched row, sorted by row.

    ``labels`` itself is left alone: the images and the other truths are drawn from the true labels.
    """
    given = np.array(labels, copy=True)
    wanted = int(round(rate * n_train))
    if wanted <= 0:
        return given, []
    candidates = noise_candidates(labels, n_train, protected)
    rng = np.random.default_rng([seed, LABEL_NOISE_STREAM])
    rows = np.sort(rng.choice(candidates, size=min(wanted, len(candidates)), replace=False))
    records = []
    for row in rows.tolist():
        true = int(labels[row])
        given[row] = sibling(true, rng)
        records.append({"row": row, "true": true, "given": int(given[row])})
    return given, records

"""The probability matrices every fusion strategy reads: one ``(n, 27)`` matrix per model, rows aligned.

Kept apart so that the strategies, the weight search and the fused model share one shape check and one
row normalisation (the published tables are renormalised with the same function).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rakuten.contracts.classes import N_CLASSES


def check_inputs(probs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The matrices as float64, each checked to be ``(n, 27)`` with the same ``n``; a bad one is a ValueError."""
    if len(probs) == 0:
        raise ValueError("fusion needs at least one probability matrix")
    mats = [np.asarray(p, dtype=np.float64) for p in probs]
    n = mats[0].shape[0]
    for i, m in enumerate(mats):
        if m.ndim != 2 or m.shape != (n, N_CLASSES):
            raise ValueError(f"probability matrix {i}: expected shape ({n}, {N_CLASSES}), got {m.shape}")
    return mats


def normalise_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; an all-zero row becomes uniform."""
    s = m.sum(axis=1, keepdims=True)
    out = np.full_like(m, 1.0 / m.shape[1])
    np.divide(m, s, out=out, where=s > 0)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax (shifted by the row maximum: no overflow)."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def weighted_sum(weights: Sequence[float], mats: Sequence[np.ndarray]) -> np.ndarray:
    """``sum_i weights[i] * mats[i]``, element by element, in model order.

    Why not ``np.tensordot``: it runs as a BLAS matrix-vector product whose summation order for an element
    depends on that element's position, so a row fused among other rows could differ in its last bit from
    the same row fused alone (measured: 1.1e-16 on 1-2 rows in 60). Element-wise, a row's fused
    probabilities depend on that row only: the service's batches, ``rakuten predict``'s chunks and a
    cluster's partitions give the same bits."""
    out = np.zeros(np.shape(mats[0]), dtype=np.float64)
    for w, m in zip(weights, mats):
        out += float(w) * np.asarray(m, dtype=np.float64)
    return out

"""Soft voting: a weighted mean of the models' probabilities, with fixed weights or weights searched on val.

- ``soft_vote``: the weights of ``fusion.weights`` (study: 0.6 text / 0.4 image);
- ``soft_vote_fit``: the weights that maximise validation weighted F1 on a simplex grid.

The fast :func:`weighted_f1` lives here because the grid search is what needs it fast.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from rakuten.contracts.classes import N_CLASSES
from rakuten.fusion.probs import check_inputs, weighted_sum


def weighted_f1(y: np.ndarray, proba: np.ndarray) -> float:
    """Weighted F1 of the argmax, equal to scikit-learn's ``f1_score(average="weighted")``.

    Counted with ``bincount`` because the weight search calls it hundreds of times per fold,
    where ``f1_score``'s input checks dominate the run time.
    """
    pred = proba.argmax(axis=1)
    support = np.bincount(y, minlength=N_CLASSES)
    predicted = np.bincount(pred, minlength=N_CLASSES)
    tp = np.bincount(y[y == pred], minlength=N_CLASSES)
    denom = support + predicted
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(N_CLASSES), where=denom > 0)
    return float((support * f1).sum() / len(y))


def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """All weight vectors with entries in multiples of ``step`` summing to 1, shape (k, n_models)."""
    units = int(round(1.0 / step))
    if units < 1 or abs(units * step - 1.0) > 1e-9:
        raise ValueError(f"weight grid step {step} must divide 1 (e.g. 0.1, 0.05)")
    rows = [c for c in itertools.product(range(units + 1), repeat=n_models) if sum(c) == units]
    return np.array(rows, dtype=np.float64) / units


class SoftVote:
    """Weighted mean of the models' probabilities; weights fixed at construction (params)."""

    def __init__(self, weights: Sequence[float]):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"soft vote weights must be non-negative with a positive sum, got {list(weights)}")
        self.weights_ = w / w.sum()

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "SoftVote":
        return self

    def predict_proba(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        mats = check_inputs(probs)
        if len(mats) != len(self.weights_):
            raise ValueError(f"soft vote has {len(self.weights_)} weights but got {len(mats)} matrices")
        return weighted_sum(self.weights_, mats)


class FittedSoftVote(SoftVote):
    """Soft vote whose weights maximise validation weighted F1 on a simplex grid.

    Weighted F1 is flat over wide weight ranges, so ties are broken by the lower log loss: a
    model that adds nothing then ends with a low weight instead of an arbitrary one.
    """

    def __init__(self, step: float = 0.1):
        self.step = step
        self.weights_ = np.empty(0)

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "FittedSoftVote":
        mats = check_inputs(probs)
        y = np.asarray(y, dtype=np.int64)
        best_key, best_w = None, None
        for w in simplex_grid(len(mats), self.step):
            fused = weighted_sum(w, mats)
            p_true = np.clip(fused[np.arange(len(y)), y], 1e-15, 1.0)
            key = (round(weighted_f1(y, fused), 9), float(np.mean(np.log(p_true))))
            if best_key is None or key > best_key:
                best_key, best_w = key, w
        self.weights_ = best_w
        return self

"""How trustworthy a probability matrix is: log loss, Brier score, top-label ECE and its reliability bins.

Kept in contracts (pure numpy) because two layers score the same way: fusion chooses its calibrator on
these numbers (:mod:`rakuten.fusion.calibration`) and the evaluate stage reports them; one definition
means the numbers in ``reports/fusion.json`` and the report agree.

``proba`` is ``(n, k)`` (rows need not be renormalised here: they are scored as given), ``y_idx`` the
true class indices (canonical order, :mod:`rakuten.contracts.classes`).
"""

from __future__ import annotations

import numpy as np

#: probabilities are clipped to this before the log: a confident miss costs ~34.5 nats, not infinity
NLL_EPS = 1e-15
#: equal-width bins of the top-label confidence (Guo et al., 2017)
ECE_BINS = 15


def _checked(proba, y_idx) -> tuple[np.ndarray, np.ndarray]:
    """``proba`` as a float64 ``(n, k)`` array and ``y_idx`` as int64 ``(n,)`` indices in ``[0, k)``."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_idx, dtype=np.int64)
    if p.ndim != 2 or y.shape != (len(p),):
        raise ValueError(f"expected proba (n, k) and y_idx (n,), got {p.shape} and {y.shape}")
    if len(p) == 0:
        raise ValueError("cannot score an empty set of predictions")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"class indices must lie in [0, {p.shape[1]}), got {y.min()}..{y.max()}")
    return p, y


def nll_per_row(proba, y_idx) -> np.ndarray:
    """Each row's negative log-likelihood of its true class (natural log), probabilities clipped at
    ``NLL_EPS``. Per row, so that a bootstrap can average resampled rows (rakuten.evaluation.reliability)."""
    p, y = _checked(proba, y_idx)
    return -np.log(np.clip(p[np.arange(len(y)), y], NLL_EPS, 1.0))


def nll(proba, y_idx) -> float:
    """Mean negative log-likelihood of the true class (:func:`nll_per_row` averaged)."""
    return float(np.mean(nll_per_row(proba, y_idx)))


def brier_per_row(proba, y_idx) -> np.ndarray:
    """Each row's squared distance to its one-hot label, summed over classes (0 = perfect, 2 = certain and
    wrong)."""
    p, y = _checked(proba, y_idx)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return np.sum((p - onehot) ** 2, axis=1)


def brier(proba, y_idx) -> float:
    """Multi-class Brier score: :func:`brier_per_row` averaged over rows."""
    return float(np.mean(brier_per_row(proba, y_idx)))


def bin_index(confidence: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each confidence among ``n_bins`` equal-width bins ``(lo, hi]`` of ``[0, 1]`` (0 falls in
    the first bin). An edge value belongs to the bin it closes: 0.2 with 5 bins is in ``(0, 0.2]``."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, np.asarray(confidence, dtype=np.float64), side="left") - 1, 0, n_bins - 1)


def reliability_bins(proba, y_idx, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of the top-label confidence: ``lo``, ``hi``, ``count``, mean ``confidence`` and
    ``accuracy`` of its rows (NaN for an empty bin). What a reliability diagram draws."""
    p, y = _checked(proba, y_idx)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = bin_index(confidence, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"lo": edges[:-1], "hi": edges[1:], "count": count, "confidence": mean_conf, "accuracy": accuracy}


def ece(proba, y_idx, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top label: the count-weighted mean over non-empty bins of
    ``|accuracy - mean confidence|`` (weights = share of rows in the bin, not one per bin)."""
    bins = reliability_bins(proba, y_idx, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] * gaps) / np.sum(bins["count"]))


def calibration_scores(proba, y_idx, n_bins: int = ECE_BINS) -> dict[str, float]:
    """``nll``, ``ece`` and ``brier`` of one probability matrix, rounded to 6 places like the other scores."""
    return {
        "nll": round(nll(proba, y_idx), 6),
        "ece": round(ece(proba, y_idx, n_bins), 6),
        "brier": round(brier(proba, y_idx), 6),
    }

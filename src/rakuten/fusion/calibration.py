"""Calibrating the fused probabilities: a map from the fused matrix to one whose confidences can be trusted.

Why: the review threshold (:mod:`rakuten.fusion.review`) reads the top probability as "the chance this
answer is right"; a soft vote or a stacked model does not promise that. Each calibrator is fitted on
validation rows only (the fusion stage's rows, never test):

- ``none``: the identity;
- ``temperature``: ``softmax(log p / T)``, one scalar ``T > 0`` minimising the log loss (keeps the argmax);
- ``vector_scaling``: ``softmax(w * log p + b)``, a scale and a bias per class, minimising the log loss
  plus a small L2 pull toward temperature scaling (every ``w`` equal, ``b = 0``); it may move the argmax.

Which one is kept (``fusion.calibration = auto``) is decided out of fold: each candidate is cross-fitted on
the fusion's own validation folds and the lowest out-of-fold log loss wins (:func:`choose`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from rakuten.contracts.calibration_metrics import calibration_scores
from rakuten.contracts.classes import CLASS_CODES

log = logging.getLogger(__name__)

#: the candidates, simplest first (a tie on out-of-fold log loss keeps the simpler)
METHODS = ("none", "temperature", "vector_scaling")
#: probabilities are clipped to this before the log, so a 0 stays (almost) 0 rather than -inf
LOG_EPS = 1e-12
#: the temperature is searched on log T within these bounds (over-confident: T > 1)
T_BOUNDS = (0.05, 20.0)
#: vector scaling's L2 pull of the per-class scales toward their mean and of the biases toward 0, in rows:
#: the penalty added to the mean log loss is VECTOR_L2 / n (0.01 on the project's 500 val rows)
VECTOR_L2 = 5.0


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), LOG_EPS, None))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _mean_nll(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(_log_softmax(logits)[np.arange(len(y)), y]))


class Identity:
    """``none``: the probabilities as they are."""

    method = "none"

    def fit(self, proba: np.ndarray, y: np.ndarray) -> "Identity":
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        return np.array(proba, dtype=np.float64)

    def params(self) -> dict:
        return {}


class Temperature:
    """``temperature``: ``softmax(log p / T)``; T minimises the mean log loss (bounded search on log T,
    deterministic). T > 1 softens an over-confident model, T < 1 sharpens an under-confident one."""

    method = "temperature"

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)

    def fit(self, proba: np.ndarray, y: np.ndarray) -> "Temperature":
        logp, y = _log(proba), np.asarray(y, dtype=np.int64)
        lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
        found = minimize_scalar(
            lambda log_t: _mean_nll(logp / np.exp(log_t), y), bounds=(lo, hi), method="bounded", options={"xatol": 1e-6}
        )
        self.temperature = float(np.exp(found.x))
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        return np.exp(_log_softmax(_log(proba) / self.temperature))

    def params(self) -> dict:
        return {"temperature": round(self.temperature, 6)}


class VectorScaling:
    """``vector_scaling``: ``softmax(w * log p + b)`` with one ``w`` and one ``b`` per class, fitted by L-BFGS
    from the identity on the mean log loss plus ``VECTOR_L2 / n * (|w - mean(w)|^2 + |b|^2)`` (deterministic).

    The pull is toward a shared scale (a temperature, left free) rather than toward ``w = 1``: a fusion
    that needs one strong global rescaling (the soft vote needs ``T`` about 0.4) would otherwise pay the
    penalty on every class and end worse than temperature scaling (measured on the project's val rows:
    out-of-fold log loss 0.447 against 0.425). Divided by ``n``: a prior worth a fixed number of rows.
    """

    method = "vector_scaling"

    def __init__(self, n_classes: int = len(CLASS_CODES)):
        self.scale = np.ones(n_classes)
        self.bias = np.zeros(n_classes)

    def fit(self, proba: np.ndarray, y: np.ndarray) -> "VectorScaling":
        logp, y = _log(proba), np.asarray(y, dtype=np.int64)
        n, k = logp.shape
        onehot = np.zeros((n, k))
        onehot[np.arange(n), y] = 1.0
        lam = VECTOR_L2 / n

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            logq = _log_softmax(logp * w + b)
            dz = (np.exp(logq) - onehot) / n  # gradient of the mean log loss w.r.t. the logits
            dev = w - w.mean()  # d/dw of |w - mean(w)|^2 is 2 (w - mean(w)): the deviations sum to 0
            value = -np.sum(logq * onehot) / n + lam * (np.sum(dev**2) + np.sum(b**2))
            grad = np.concatenate([(dz * logp).sum(axis=0) + 2 * lam * dev, dz.sum(axis=0) + 2 * lam * b])
            return float(value), grad

        start = np.concatenate([np.ones(k), np.zeros(k)])
        found = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-7})
        self.scale, self.bias = found.x[:k].copy(), found.x[k:].copy()
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        return np.exp(_log_softmax(_log(proba) * self.scale + self.bias))

    def params(self) -> dict:
        k = len(self.scale)
        codes = [str(c) for c in CLASS_CODES] if k == len(CLASS_CODES) else [str(i) for i in range(k)]
        return {
            "scale": {c: round(float(v), 6) for c, v in zip(codes, self.scale)},
            "bias": {c: round(float(v), 6) for c, v in zip(codes, self.bias)},
        }


FACTORIES: dict[str, Callable[[], object]] = {
    "none": Identity,
    "temperature": Temperature,
    "vector_scaling": VectorScaling,
}
#: the classes a saved fused model can hold as its calibrator (:mod:`rakuten.fusion.persistence`)
CALIBRATORS = (Identity, Temperature, VectorScaling)


def cross_fit(
    method: str, proba: np.ndarray, y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each fold transformed by a calibrator fitted on the other folds."""
    proba = np.asarray(proba, dtype=np.float64)
    out = np.empty_like(proba)
    for train_idx, held_idx in splits:
        out[held_idx] = FACTORIES[method]().fit(proba[train_idx], y[train_idx]).transform(proba[held_idx])
    return out


@dataclass
class Calibration:
    """The chosen calibrator (fitted on every validation row), its out-of-fold validation probabilities, and
    every candidate's out-of-fold validation scores (``nll``, ``ece``, ``brier``)."""

    calibrator: object
    oof: np.ndarray
    candidates: dict[str, dict[str, float]]
    selection: str

    def report(self) -> dict:
        """The ``calibration`` block of ``reports/fusion.json``."""
        return {
            "chosen": self.calibrator.method,
            "selection": self.selection,
            "params": self.calibrator.params(),
            "candidates": [
                {"method": m, **{f"val_oof_{k}": v for k, v in s.items()}} for m, s in self.candidates.items()
            ],
        }


def choose(
    proba: np.ndarray, y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]], forced: str = "auto"
) -> Calibration:
    """Cross-fit every candidate on the validation folds ``splits``, keep ``forced`` or (``auto``) the one with
    the lowest out-of-fold log loss, and refit it on all of ``proba`` (validation rows only)."""
    if forced != "auto" and forced not in FACTORIES:
        raise ValueError(f"calibration {forced!r}, expected auto or one of {', '.join(METHODS)}")
    y = np.asarray(y, dtype=np.int64)
    oof = {m: cross_fit(m, proba, y, splits) for m in METHODS}
    candidates = {m: calibration_scores(oof[m], y) for m in METHODS}
    for m, s in candidates.items():
        log.info("calibration %-15s val OOF nll %.4f ece %.4f brier %.4f", m, s["nll"], s["ece"], s["brier"])
    chosen = forced if forced != "auto" else min(METHODS, key=lambda m: (candidates[m]["nll"], METHODS.index(m)))
    selection = "lowest out-of-fold val NLL" if forced == "auto" else "forced by fusion.calibration"
    return Calibration(FACTORIES[chosen]().fit(proba, y), oof[chosen], candidates, selection)

"""Which predictions a person should check: a threshold on the calibrated top probability, chosen on val.

Why: an operator wants "auto-accept what is right at least 98 % of the time, send the rest to review".
The threshold is the lowest top probability at which the accepted validation rows (their cross-fitted
calibrated probabilities, :mod:`rakuten.fusion.calibration`) reach ``review.target_precision``: the lowest
such threshold accepts the most rows. Test rows never choose it; they only show how it holds up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rakuten.core.config import knob

log = logging.getLogger(__name__)

SECTION = "review"
#: the threshold when no threshold reaches the target: above any probability, so every row goes to review
REVIEW_ALL = 1.0 + 1e-6


@dataclass(frozen=True)
class ReviewConfig:
    """``review``: the human-review threshold on the fused model's calibrated top probability."""

    target_precision: float = knob(
        0.98,
        "accuracy wanted on the auto-accepted rows; the threshold is the lowest calibrated top probability "
        "whose accepted val rows reach it (the rest go to review)",
        lo=0.0,
        hi=1.0,
        lo_open=True,
    )


def risk_coverage(proba: np.ndarray, y_idx: np.ndarray) -> pd.DataFrame:
    """One row per distinct top probability ``threshold`` (descending): the ``coverage`` (share of rows with
    top probability >= threshold), the ``precision`` (accuracy of those rows) and ``risk`` = 1 - precision."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_idx, dtype=np.int64)
    if proba.ndim != 2 or y.shape != (len(proba),) or len(y) == 0:
        raise ValueError(f"expected proba (n, k) and y_idx (n,) with n > 0, got {proba.shape} and {y.shape}")
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    last = np.r_[conf[1:] != conf[:-1], True]  # the last row of each run of equal confidences
    accepted = np.arange(1, len(conf) + 1)[last]
    hits = np.cumsum(correct)[last]
    precision = hits / accepted
    return pd.DataFrame(
        {
            "threshold": conf[last],
            "coverage": accepted / len(conf),
            "precision": precision,
            "risk": 1.0 - precision,
        }
    )


@dataclass(frozen=True)
class ReviewThreshold:
    """The chosen threshold and how it does on the validation rows it was chosen on."""

    target_precision: float
    threshold: float
    target_met: bool
    val_coverage: float
    val_precision: float | None  # None when no val row is accepted

    def report(self) -> dict:
        """The ``review`` block of ``reports/fusion.json``."""
        return {
            "target_precision": self.target_precision,
            "threshold": round(self.threshold, 6),
            "target_met": self.target_met,
            "val_coverage": round(self.val_coverage, 6),
            "val_precision": None if self.val_precision is None else round(self.val_precision, 6),
        }


def choose_threshold(proba: np.ndarray, y_idx: np.ndarray, target_precision: float) -> ReviewThreshold:
    """The lowest top probability ``t`` at which the rows with top probability >= ``t`` are right at least
    ``target_precision`` of the time; :data:`REVIEW_ALL` (everything to review, a warning) when none is."""
    curve = risk_coverage(proba, y_idx)
    ok = curve[curve["precision"] >= target_precision - 1e-12]
    if ok.empty:
        log.warning(
            "review: no threshold reaches review.target_precision = %s on val (best %.4f); every prediction "
            "goes to review",
            target_precision,
            curve["precision"].max(),
        )
        return ReviewThreshold(target_precision, REVIEW_ALL, False, 0.0, None)
    best = ok.iloc[-1]  # thresholds descend: the last one that reaches the target is the lowest
    log.info(
        "review: threshold %.4f accepts %.1f %% of val rows at precision %.4f (target %s)",
        best["threshold"],
        100 * best["coverage"],
        best["precision"],
        target_precision,
    )
    return ReviewThreshold(
        target_precision, float(best["threshold"]), True, float(best["coverage"]), float(best["precision"])
    )

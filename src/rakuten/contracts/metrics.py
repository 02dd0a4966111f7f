"""Scores used everywhere: weighted F1 (the challenge metric), macro F1, accuracy, per-class tables.

Kept apart from :mod:`rakuten.evaluation.evaluate` (the evaluate stage's tables and report) so that the model
stages, fusion and the contract depend on these few lines only, not on the evaluation report code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS


def scores(y_true, y_pred) -> dict[str, float]:
    """``weighted_f1``, ``macro_f1`` and ``accuracy`` over the 27 canonical classes, rounded to 6 places."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set of predictions")
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        "weighted_f1": round(float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)), 6),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
    }


def per_class_report(y_true, y_pred) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (codes in canonical order, with labels)."""
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(CLASS_CODES), zero_division=0)
    return pd.DataFrame(
        {
            "prdtypecode": CLASS_CODES,
            "label": [CLASS_LABELS[c] for c in CLASS_CODES],
            "precision": np.round(p, 6),
            "recall": np.round(r, 6),
            "f1": np.round(f, 6),
            "support": s,
        }
    )

"""Confident learning on the pooled probabilities (cleanlab), the issue table and the training split.

cleanlab estimates from the out-of-fold probabilities how many labels of each class went to each other
class (the confident joint) and flags that many rows, the least likely ones first; the score is cleanlab's
label quality (the pooled probability of the given label: lower = more suspicious).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from rakuten.contracts.classes import codes_to_indices, indices_to_codes

#: the split of a flagged train row that the models must not learn from (label_audit.label_noise = drop)
DROPPED = "dropped"
ISSUE_COLUMNS = ("row_id", "given", "suggested", "score")


def find_issues(given: np.ndarray, pred_probs: np.ndarray, filter_by: str) -> tuple[np.ndarray, np.ndarray]:
    """``(flagged positions, label quality score of every row)`` for class codes ``given``."""
    labels = codes_to_indices(given)
    scores = get_label_quality_scores(labels, pred_probs, method="self_confidence")
    flagged = find_label_issues(labels, pred_probs, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    return np.asarray(flagged, dtype=np.int64), np.asarray(scores, dtype=np.float64)


def issue_table(
    row_ids: np.ndarray, given: np.ndarray, pred_probs: np.ndarray, scores: np.ndarray, flagged: np.ndarray
) -> pd.DataFrame:
    """The flagged rows: ``row_id``, ``given`` and ``suggested`` (argmax of the pooled probabilities) codes
    and ``score``, most suspicious first (ties by ``row_id``)."""
    table = pd.DataFrame(
        {
            "row_id": np.asarray(row_ids, dtype=np.int64)[flagged],
            "given": np.asarray(given, dtype=np.int64)[flagged],
            "suggested": indices_to_codes(pred_probs[flagged].argmax(axis=1)),
            "score": np.round(scores[flagged], 6),
        },
        columns=list(ISSUE_COLUMNS),
    )
    return table.sort_values(["score", "row_id"], kind="stable").reset_index(drop=True)


def training_split(split: pd.DataFrame, flagged_row_ids, policy: str) -> pd.DataFrame:
    """``split`` as the model stages train with it: unchanged for ``keep``; for ``drop`` the flagged rows of
    the train split get the split :data:`DROPPED` (val, test and official test rows never change)."""
    out = split.copy()
    if policy == "drop":
        drop = out["row_id"].isin(np.asarray(flagged_row_ids, dtype=np.int64)) & (out["split"] == "train")
        out.loc[drop, "split"] = DROPPED
    elif policy != "keep":
        raise ValueError(f"unknown label_noise policy {policy!r}")
    return out

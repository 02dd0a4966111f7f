"""The study's duplicate policy for training images: which train rows to keep, with what weight.

Applied per near-duplicate cluster (exact copies are in the same cluster), to train rows only
(validation and test rows are never dropped: they are scored as they come):

* all train members of one class: keep one (the sharpest picture, the highest blur score; ties to
  the lowest row_id) and mark the others ``keep_for_train=False`` (the study: "on ne garde
  qu'une seule instance"; marked, not deleted, so the choice can be audited and undone);
* members of several classes: keep one per class, each with ``sample_weight = cross_class_weight``
  (the study: "conservées mais avec un facteur de pondération").

Rows without a readable image are not trained on (``keep_for_train=False``): a grey placeholder
carries no information about the class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def duplicate_policy(
    near_group: np.ndarray,
    labels: np.ndarray,
    is_train: np.ndarray,
    blur_score: np.ndarray,
    readable: np.ndarray,
    cross_class_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(keep_for_train, sample_weight)`` per row (see module docstring).

    ``labels`` may hold anything for non-train rows; ``blur_score`` NaN counts as least sharp.
    """
    n = len(near_group)
    keep = np.asarray(readable, dtype=bool).copy()
    weight = np.ones(n, dtype=np.float64)
    members = np.flatnonzero((near_group >= 0) & is_train & keep)
    if not len(members):
        return keep, weight
    frame = pd.DataFrame(
        {
            "row": members,
            "group": near_group[members],
            "label": labels[members],
            "sharp": np.nan_to_num(blur_score[members], nan=-1.0),
        }
    )
    frame = frame.sort_values(["group", "label", "sharp", "row"], ascending=[True, True, False, True])
    first_of_class = ~frame.duplicated(["group", "label"])
    keep[frame.loc[~first_of_class, "row"].to_numpy()] = False
    n_classes = frame.groupby("group")["label"].nunique()
    mixed = frame["group"].map(n_classes).to_numpy() > 1
    weight[frame.loc[first_of_class.to_numpy() & mixed, "row"].to_numpy()] = cross_class_weight
    return keep, weight

"""Intervals on the evaluate stage's scores: every model and fusion strategy on val and test, and the
chosen fusion's paired gain over the best single model.

Why a module apart from :mod:`rakuten.evaluation.bootstrap`: that one knows arrays; this one knows the
evaluate stage's long prediction table (:func:`rakuten.evaluation.evaluate.labelled_predictions`) and
checks that every name of a split was scored on the same rows, which is what makes the resamples paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rakuten.core.errors import PipelineError
from rakuten.evaluation.bootstrap import SCORES, BootstrapConfig, PairedDifference, paired_difference
from rakuten.evaluation.bootstrap import scores_with_intervals as _intervals

INTERVAL_COLUMNS = ("name", "split", "score", "value", "low", "high")


def aligned(preds: pd.DataFrame, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The actual labels of ``split`` (by row_id) and each name's predictions on the same rows.

    Every name must hold exactly the same rows with the same labels: a paired resample of rows means
    nothing otherwise, so a mismatch is one line naming the name (a stale stage), not a silent subset.
    """
    part = preds[preds["split"] == split].sort_values(["name", "row_id"], kind="stable")
    actual, out, ref, ref_name = None, {}, None, ""
    for name, rows in part.groupby("name", sort=False):
        ids = rows["row_id"].to_numpy(dtype=np.int64)
        labels = rows["actual"].to_numpy(dtype=np.int64)
        if ref is None:
            ref, actual, ref_name = ids, labels, name
        elif not (np.array_equal(ids, ref) and np.array_equal(labels, actual)):
            raise PipelineError(
                f"{split} rows of {name} differ from those of {ref_name}; expected every model and strategy "
                "scored on the same rows (rerun `dvc repro`)"
            )
        out[name] = rows["predicted"].to_numpy(dtype=np.int64)
    return (np.array([], np.int64) if actual is None else actual), out


def score_intervals(preds: pd.DataFrame, cfg: BootstrapConfig, splits=("test", "val")) -> pd.DataFrame:
    """Long table ``name, split, score, value, low, high``: every name's :data:`SCORES` with their
    bootstrap interval, per split (one set of resamples per split, shared by every name)."""
    records = []
    for split in splits:
        actual, by_name = aligned(preds, split)
        if not by_name:
            continue
        for name, est in _intervals(actual, by_name, cfg).items():
            records += [(name, split, s, est[s].value, est[s].low, est[s].high) for s in SCORES]
    return pd.DataFrame.from_records(records, columns=list(INTERVAL_COLUMNS))


def fusion_gain(preds: pd.DataFrame, table: pd.DataFrame, cfg: BootstrapConfig) -> tuple[str, PairedDifference]:
    """The chosen fusion (``fusion``) minus the best single model on test weighted F1, paired: both
    scored on the same resampled test rows. Returns the best model's name and the difference."""
    models = table[table["kind"] == "model"]
    best = str(models.loc[models["test_weighted_f1"].idxmax(), "name"])
    actual, by_name = aligned(preds[preds["name"].isin(["fusion", best])], "test")
    return best, paired_difference(actual, by_name["fusion"], by_name[best], cfg)


def interval_of(intervals: pd.DataFrame, name: str, split: str, score: str) -> tuple[float, float] | None:
    """``(low, high)`` of one score, or None when it was not computed."""
    hit = intervals[(intervals["name"] == name) & (intervals["split"] == split) & (intervals["score"] == score)]
    return None if hit.empty else (float(hit["low"].iloc[0]), float(hit["high"].iloc[0]))

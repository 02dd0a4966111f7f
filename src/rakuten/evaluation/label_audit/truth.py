"""Scoring the flags against the sample's planted label noise (``defects.json``, key ``label_noise``).

The generator records each switched label by its X index (``row``, as ``hard_rows``); the catalog keeps that
index as ``orig_index`` of the labelled rows. The audit only sees train rows, so it is scored against the
planted rows that the split put in train: a planted row in val or test can never be flagged, and counting
it would blame the audit for the split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from rakuten.core.errors import PipelineError

DEFECTS = Path("data/sample/defects.json")


def planted_noise(defects: Mapping[str, Any], catalog: pd.DataFrame, source: str | Path = DEFECTS) -> pd.DataFrame:
    """``row_id``, ``true``, ``given`` of every planted switch (one line naming ``source`` when absent)."""
    if "label_noise" not in defects:
        raise PipelineError(
            f"{source}: missing key label_noise; expected the sample generator's ground truth "
            "(rerun `dvc repro sample`)"
        )
    records = pd.DataFrame(defects["label_noise"], columns=["row", "true", "given"])
    labelled = catalog.loc[~catalog["is_official_test"].astype(bool), ["orig_index", "row_id"]]
    row_id = records["row"].map(labelled.set_index("orig_index")["row_id"])
    if row_id.isna().any():
        missing = int(records.loc[row_id.isna(), "row"].iloc[0])
        raise PipelineError(f"{source}: label_noise row {missing} is not a labelled row of the catalog")
    return pd.DataFrame(
        {"row_id": row_id.astype(np.int64), "true": records["true"].astype(np.int64), "given": records["given"]}
    )


def _ratio(a: int, b: int) -> float:
    return round(a / b, 6) if b else 0.0  # sklearn's zero_division=0


def score_flags(issues: pd.DataFrame, planted: pd.DataFrame, audited_row_ids) -> dict[str, float | int]:
    """Precision, recall and F1 of the flagged rows (``issues``: ``row_id``, ``suggested``) against the
    planted rows among ``audited_row_ids``, and how many flagged planted rows got their true label back."""
    truth = planted[planted["row_id"].isin(np.asarray(audited_row_ids))].set_index("row_id")
    flagged = issues.set_index("row_id")
    hits = flagged.index.intersection(truth.index)
    precision, recall = _ratio(len(hits), len(flagged)), _ratio(len(hits), len(truth))
    restored = int((flagged.loc[hits, "suggested"] == truth.loc[hits, "true"]).sum())
    return {
        "planted_rows_audited": int(len(truth)),
        "planted_rows_total": int(len(planted)),
        "true_positives": int(len(hits)),
        "precision": precision,
        "recall": recall,
        "f1": round(2 * precision * recall / (precision + recall), 6) if precision + recall else 0.0,
        "suggested_is_true_label": restored,
    }

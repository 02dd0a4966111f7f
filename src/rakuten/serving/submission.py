"""The challenge submission: the saved fused model applied to the official X_test rows' probabilities.

Kept apart from :mod:`rakuten.serving.predict` (new products: cleaning and the trained models) because the
``submission`` stage only reads the probability tables the model stages wrote: it must not depend on
the cleaning or model code it never runs (it imports the fused model's classes only, :mod:`rakuten.fusion.model`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rakuten.contracts.classes import PROBA_COLUMNS, indices_to_codes
from rakuten.core.errors import PipelineError
from rakuten.fusion.model import FusedModel, availability


def submission_frame(official_rows: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
    """The challenge's file: the X_test index (unnamed) and ``prdtypecode``, one row per X_test row.

    ``official_rows`` are the catalog's official-test rows (``orig_index``) in the order of ``proba``.
    """
    if len(official_rows) != len(proba):
        raise PipelineError(f"submission: {len(official_rows)} official test rows but {len(proba)} predictions")
    index = official_rows["orig_index"].to_numpy(dtype=np.int64)
    if len(np.unique(index)) != len(index):
        raise PipelineError("submission: duplicate X_test index values; expected one prediction per row")
    codes = indices_to_codes(np.asarray(proba).argmax(axis=1))
    return pd.DataFrame({"prdtypecode": codes}, index=pd.Index(index, name=None)).sort_index()


def official_submission(
    catalog: pd.DataFrame,
    model: FusedModel,
    tables: dict[str, pd.DataFrame],
    text_ok: pd.Series | None = None,
    image_ok: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Apply the saved fused model to the official test rows of every model table.

    ``text_ok`` / ``image_ok`` are Series indexed by row_id. Every X_test row must have a
    probability row in every fused model's table, else one line names the model and the row.
    Returns the submission frame and a row-accounting report.
    """
    official = catalog[catalog["is_official_test"].astype(bool)].sort_values("row_id")
    ids = official["row_id"].to_numpy(dtype=np.int64)
    mats = []
    for name in model.models:
        t = tables[name]
        t = t[t["split"].astype(str) == "official_test"].set_index("row_id")
        missing = np.setdiff1d(ids, t.index.to_numpy())
        if len(missing):
            orig = official.loc[official["row_id"] == missing[0], "orig_index"].iloc[0]
            raise PipelineError(
                f"reports/probs/{name}.parquet: no official_test row for row_id {missing[0]} "
                f"(X_test index {orig}); expected one per X_test row (rerun `dvc repro {name}`)"
            )
        mats.append(t.loc[ids, list(PROBA_COLUMNS)].to_numpy(dtype=np.float64))
    t_ok = np.ones(len(ids), bool) if text_ok is None else text_ok.reindex(ids).fillna(True).to_numpy(bool)
    i_ok = np.ones(len(ids), bool) if image_ok is None else image_ok.reindex(ids).fillna(True).to_numpy(bool)
    proba = model.predict_proba(mats, availability(model.modalities, t_ok, i_ok))
    submission = submission_frame(official, proba)
    inputs = pd.Series(model.inputs_used(t_ok, i_ok)).value_counts()
    report = {
        "rows_official_test": int(len(official)),
        "rows_submitted": int(len(submission)),
        "strategy": model.strategy,
        "models": model.models,
        "inputs_used": {str(k): int(v) for k, v in inputs.items()},
        "predicted_class_counts": {
            str(k): int(v) for k, v in submission["prdtypecode"].value_counts().sort_index().items()
        },
    }
    return submission, report

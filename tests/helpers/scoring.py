"""The scores tests compare models with: the challenge metric of a model, of a probability table, and of
always predicting the most frequent training class (the baseline a model must beat)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rakuten.contracts.classes import indices_to_codes
from rakuten.contracts.metrics import scores


def proba_weighted_f1(rows: pd.DataFrame, proba: np.ndarray) -> float:
    """Weighted F1 of the argmax of ``proba`` (canonical class order) against ``rows``' labels."""
    return scores(rows["prdtypecode"].to_numpy(dtype=np.int64), indices_to_codes(proba.argmax(axis=1)))["weighted_f1"]


def model_weighted_f1(module, model, rows: pd.DataFrame) -> float:
    """Weighted F1 of a trained ``model`` of ``module`` (the model interface's ``predict_proba``) on ``rows``."""
    return proba_weighted_f1(rows, module.predict_proba(model, rows))


def majority_weighted_f1(train: pd.DataFrame, rows: pd.DataFrame) -> float:
    """Weighted F1 on ``rows`` of always predicting the most frequent class of ``train``."""
    majority = int(train["prdtypecode"].astype(int).mode().iloc[0])
    y = rows["prdtypecode"].to_numpy(dtype=np.int64)
    return scores(y, np.full(len(y), majority))["weighted_f1"]

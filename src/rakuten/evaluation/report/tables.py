"""The rows each report section shows, chosen from the stage's tables (test split only, stable order)."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from rakuten.contracts.classes import CLASS_CODES, PROBA_COLUMNS, indices_to_codes
from rakuten.core.errors import PipelineError
from rakuten.evaluation.evaluate import confusion_table


def require_columns(frame: pd.DataFrame, columns: Sequence[str], path: str, stage: str) -> None:
    """One line naming the file, the first missing column and the stage that writes it (not a KeyError)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"{path}: missing column {missing[0]}; expected {', '.join(columns)} (rerun `dvc repro {stage}`)"
        )


def titles_by_row(catalog: pd.DataFrame) -> pd.Series:
    """Product titles (``designation``) by ``row_id`` from ``data/interim/catalog.parquet``."""
    require_columns(catalog, ("row_id", "designation"), "data/interim/catalog.parquet", "ingest")
    return catalog.set_index("row_id")["designation"]


def predictions_on_test(probs: pd.DataFrame) -> pd.DataFrame:
    """``row_id, actual, predicted, confidence`` of the test rows of a probability table, by row_id.
    Predicted = argmax of the probabilities (as :func:`rakuten.evaluation.evaluate.labelled_predictions`)."""
    test = probs[probs["split"].astype(str) == "test"].sort_values("row_id", kind="stable")
    p = test[list(PROBA_COLUMNS)].to_numpy()
    best = p.argmax(axis=1)
    return pd.DataFrame(
        {
            "row_id": test["row_id"].to_numpy(dtype=np.int64),
            "actual": test["prdtypecode"].to_numpy(dtype=np.int64),
            "predicted": indices_to_codes(best),
            "confidence": p[np.arange(len(p)), best],
        }
    )


def top_confused_pairs(actual: Iterable[int], predicted: Iterable[int], n: int) -> list[tuple[int, int, int]]:
    """The ``n`` most frequent off-diagonal ``(actual, predicted, count)``: count descending, then
    actual and predicted code ascending, so ties always rank the same way."""
    cm = confusion_table(np.asarray(list(actual)), np.asarray(list(predicted)))
    pairs = [
        (int(a), int(p), int(cm.loc[a, p])) for a in CLASS_CODES for p in CLASS_CODES if a != p and cm.loc[a, p] > 0
    ]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))[:n]


def pair_examples(preds: pd.DataFrame, actual: int, predicted: int, m: int) -> pd.DataFrame:
    """The first ``m`` rows (by row_id) of ``preds`` classified ``actual`` -> ``predicted``."""
    hit = preds[(preds["actual"] == actual) & (preds["predicted"] == predicted)]
    return hit.sort_values("row_id", kind="stable").head(m)


def gradcam_choice(image_preds: pd.DataFrame, readable: pd.Series, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``k`` correctly and the first ``k`` wrongly classified test rows (by row_id) of the image
    model whose source image was readable: an unreadable one is a grey placeholder, nothing to explain."""
    ok = image_preds[image_preds["row_id"].map(readable).fillna(False).astype(bool)].sort_values(
        "row_id", kind="stable"
    )
    right = ok["actual"] == ok["predicted"]
    return ok[right].head(k), ok[~right].head(k)

"""The files every model stage writes, and their validation (docs/architecture.md: the model contract).

``reports/probs/<name>.parquet``: ``row_id``, ``split`` (val/test/official_test), ``prdtypecode``
(nullable Int64, empty for official test rows) and one probability column per class in canonical
order (``p_10`` ... ``p_2905``), rows summing to 1.
``reports/metrics/<name>.json``: ``{"val": {weighted_f1, macro_f1, accuracy}, "test": {...}}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, PROBA_COLUMNS, indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.core.errors import PipelineError
from rakuten.core.io import write_json, write_parquet

#: the duplicate-aware split of the ``split`` stage, and the one the model stages train with: the same rows,
#: except that with ``label_audit.label_noise = drop`` the train rows the label audit flags have split
#: ``dropped`` (val, test and official_test rows are always the same)
SPLIT = Path("data/interim/split.parquet")
TRAINING_SPLIT = Path("data/interim/training_split.parquet")
PROBS_DIR = Path("reports/probs")
METRICS_DIR = Path("reports/metrics")
SCORED_SPLITS = ("val", "test")
PREDICTED_SPLITS = ("val", "test", "official_test")


def probs_path(name: str) -> Path:
    return PROBS_DIR / f"{name}.parquet"


def metrics_path(name: str) -> Path:
    return METRICS_DIR / f"{name}.json"


def check_proba(proba: np.ndarray, name: str = "probabilities", atol: float = 1e-4) -> np.ndarray:
    """Validate an (n, 27) probability matrix: finite, non-negative, rows summing to 1."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
        raise ValueError(f"{name}: expected shape (n, {N_CLASSES}), got {proba.shape}")
    if not np.all(np.isfinite(proba)) or (proba < -1e-9).any():
        raise ValueError(f"{name}: probabilities must be finite and non-negative")
    sums = proba.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if len(bad):
        raise ValueError(f"{name}: row {bad[0]} sums to {sums[bad[0]]:.6f}, expected 1")
    return proba


def as_stored(proba: np.ndarray) -> np.ndarray:
    """Probabilities at the precision the contract tables keep them (float32): what fusion and the
    submission read, so a prediction made from the models directly must go through it too."""
    return np.asarray(proba).astype(np.float32)


def proba_frame(rows: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
    """Build the contract table from ``rows`` (``row_id``, ``split``, ``prdtypecode``) and a matrix."""
    proba = check_proba(proba)
    if len(rows) != len(proba):
        raise ValueError(f"{len(rows)} rows but {len(proba)} probability rows")
    out = pd.DataFrame(
        {
            "row_id": rows["row_id"].to_numpy(dtype=np.int64),
            "split": rows["split"].astype(str).to_numpy(),
            "prdtypecode": pd.array(rows["prdtypecode"], dtype="Int64"),
        }
    )
    out[list(PROBA_COLUMNS)] = as_stored(proba)
    return out


def split_scores(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Scores per labelled split of a contract table (argmax prediction)."""
    result = {}
    for split in SCORED_SPLITS:
        part = table[table["split"] == split]
        if len(part) == 0:
            continue
        pred = indices_to_codes(part[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1))
        result[split] = scores(part["prdtypecode"].to_numpy(dtype=np.int64), pred)
    return result


def write_model_outputs(name: str, table: pd.DataFrame, extra_metrics: dict | None = None) -> dict:
    """Write ``reports/probs/<name>.parquet`` and ``reports/metrics/<name>.json``; return the metrics."""
    metrics = split_scores(table)
    if extra_metrics:
        metrics.update(extra_metrics)
    write_parquet(table, probs_path(name))
    write_json(metrics, metrics_path(name))
    return metrics


def read_probs(name: str) -> pd.DataFrame:
    """Read and validate one model's probability table; a missing one names the stage to run."""
    path = probs_path(name)
    if not path.exists():
        raise PipelineError(f"{path}: not found; run `dvc repro {name}` or remove {name} from fusion.models")
    table = pd.read_parquet(path)
    missing = [c for c in ("row_id", "split", "prdtypecode", *PROBA_COLUMNS) if c not in table.columns]
    if missing:
        raise PipelineError(f"{path}: missing column {missing[0]}; expected row_id, split, prdtypecode, p_<code> x27")
    try:
        check_proba(table[list(PROBA_COLUMNS)].to_numpy(), name=str(path))
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    return table


__all__ = [
    "CLASS_CODES",
    "check_proba",
    "proba_frame",
    "split_scores",
    "write_model_outputs",
    "read_probs",
    "probs_path",
    "metrics_path",
]

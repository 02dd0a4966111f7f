"""The cached-embeddings contract shared by the ``embed`` stage (writer) and the ``joint`` model (reader).

``data/features/embeddings.parquet``: one row per catalog row, ``row_id``, the flags ``text_ok``
(non-empty cleaned text) and ``image_ok`` (a readable image; unreadable ones are embedded from their
grey placeholder all the same), and two list<float32> columns ``text_embedding`` / ``image_embedding``
(every row the same length). ``data/features/embeddings.json``: which encoders made them, their
dimensions and the preprocessing those encoders were trained on (copied into ``models/joint``).

Why a module of its own: the ``joint`` stage must read embeddings without importing the encoders'
modules (``camembert``, ``resnet``), so that editing an encoder reruns ``embed`` (which recomputes
the embeddings) and never retrains the head for nothing, and vice versa.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rakuten.contracts.model_files import TRAINING_SPLIT
from rakuten.core.errors import PipelineError
from rakuten.core.io import read_json, read_parquet

EMBEDDINGS = Path("data/features/embeddings.parquet")
RECORD = Path("data/features/embeddings.json")
STAGE = "embed"
TEXT, IMAGE = "text_embedding", "image_embedding"
TEXT_OK, IMAGE_OK = "text_ok", "image_ok"
COLUMNS = ("row_id", TEXT_OK, IMAGE_OK, TEXT, IMAGE)
MODALITY_COLUMNS = {"text": TEXT, "image": IMAGE}


def _check_matrix(matrix: np.ndarray, n: int, what: str) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != n or matrix.shape[1] < 1:
        raise PipelineError(f"{what}: expected a float matrix of shape ({n}, d), got {matrix.shape}")
    matrix = matrix.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise PipelineError(f"{what}: row {bad[0]} has a non-finite value; expected finite embeddings")
    return matrix


def embeddings_table(
    row_ids: np.ndarray, text: np.ndarray, image: np.ndarray, text_ok: np.ndarray, image_ok: np.ndarray
) -> pd.DataFrame:
    """The table of :data:`EMBEDDINGS`, rows sorted by ``row_id`` (same bytes whatever the input order)."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    n = len(row_ids)
    text = _check_matrix(text, n, "text embeddings")
    image = _check_matrix(image, n, "image embeddings")
    order = np.argsort(row_ids, kind="stable")
    return pd.DataFrame(
        {
            "row_id": row_ids[order],
            TEXT_OK: np.asarray(text_ok, dtype=bool)[order],
            IMAGE_OK: np.asarray(image_ok, dtype=bool)[order],
            TEXT: list(text[order]),
            IMAGE: list(image[order]),
        }
    )


def read_embeddings(path: str | Path = EMBEDDINGS) -> pd.DataFrame:
    """The embeddings table; a missing file or column is one line naming the file and the stage to run."""
    table = read_parquet(path, stage_hint=STAGE)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise PipelineError(
            f"{path}: missing column {missing[0]}; expected {', '.join(COLUMNS)} (rerun `dvc repro {STAGE}`)"
        )
    return table


def read_record(path: str | Path = RECORD) -> dict:
    """``embeddings.json``: encoders, dims and the preprocessing the encoders were trained on."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run `dvc repro {STAGE}`)")
    record = read_json(path)
    for key in ("encoders", "dims", "preprocessing"):
        if not isinstance(record, dict) or key not in record:
            raise PipelineError(
                f"{path}: missing key {key}; expected encoders, dims, preprocessing (rerun `dvc repro {STAGE}`)"
            )
    return record


def matrix(frame: pd.DataFrame, modality: str) -> np.ndarray:
    """The (n, d) float32 embedding matrix of ``modality`` carried by ``frame``; a missing column or a
    ragged row is one line naming the row."""
    column = MODALITY_COLUMNS[modality]
    if column not in frame.columns:
        raise PipelineError(
            f"model frame: missing column {column}; expected the cached embeddings of "
            f"{EMBEDDINGS} (run `dvc repro {STAGE}`)"
        )
    values = frame[column].to_numpy()
    if len(values) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int64, count=len(values))
    bad = np.flatnonzero(lengths != lengths[0])
    if len(bad) or lengths[0] == 0:
        row = frame["row_id"].iloc[int(bad[0]) if len(bad) else 0] if "row_id" in frame else "?"
        raise PipelineError(
            f"model frame: row_id {row}, column {column}: embedding of length "
            f"{lengths[int(bad[0]) if len(bad) else 0]}, expected {lengths[0] or 'd > 0'} "
            f"like the other rows (rerun `dvc repro {STAGE}`)"
        )
    return _check_matrix(np.stack(values), len(values), f"model frame, column {column}")


def flags(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(text_ok, image_ok) per row; absent flags mean the input is there."""
    n = len(frame)
    text_ok = frame[TEXT_OK].fillna(False).to_numpy(dtype=bool) if TEXT_OK in frame else np.ones(n, bool)
    image_ok = frame[IMAGE_OK].fillna(False).to_numpy(dtype=bool) if IMAGE_OK in frame else np.ones(n, bool)
    return text_ok, image_ok


def load_rows(catalog: str | Path = "data/interim/catalog.parquet", split: str | Path = TRAINING_SPLIT) -> pd.DataFrame:
    """Catalog rows (``row_id``, ``prdtypecode``) with their split, as every model stage scores them (the
    training split: without the train rows the label audit drops)."""
    rows = read_parquet(catalog, stage_hint="ingest")[["row_id", "prdtypecode"]]
    return rows.merge(
        read_parquet(split, stage_hint="split")[["row_id", "split"]], on="row_id", how="inner", validate="one_to_one"
    )


def joint_frame(rows: pd.DataFrame, embeddings: pd.DataFrame, path: str | Path = EMBEDDINGS) -> pd.DataFrame:
    """``rows`` (``row_id``, ``split``, ``prdtypecode``) joined with their embeddings; a row without
    one is a one-line error (the embeddings are stale)."""
    frame = rows.merge(embeddings[list(COLUMNS)], on="row_id", how="left", validate="one_to_one")
    absent = frame[TEXT].isna()
    if absent.any():
        raise PipelineError(
            f"{path}: no row for row_id {frame.loc[absent, 'row_id'].iloc[0]}; expected one row "
            f"per catalog row (rerun `dvc repro {STAGE}`)"
        )
    return frame

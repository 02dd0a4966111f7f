"""The image model's rows: catalog x split x image_clean, the train rows it may learn from, their image files.

Rows with ``keep_for_train = False`` (image_clean's duplicates and unusable images) and unreadable
images are left out of training and counted; ``max_train_rows`` caps the rest with a stratified subset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rakuten.contracts.model_files import TRAINING_SPLIT
from rakuten.core.errors import PipelineError
from rakuten.core.io import read_parquet
from rakuten.models.resnet50.config import ResnetConfig
from rakuten.runtime.torch_setup import stratified_cap

QUALITY_COLUMNS = ("row_id", "clean_path", "readable", "keep_for_train", "sample_weight")


def load_image_frame(
    catalog: str | Path = "data/interim/catalog.parquet",
    split: str | Path = TRAINING_SPLIT,
    quality: str | Path = "data/processed/image_quality.parquet",
) -> pd.DataFrame:
    """Catalog rows (``row_id``, ``prdtypecode``) joined on ``row_id`` with their split and the
    image_clean columns; a catalog row without a quality row is a one-line error."""
    rows = read_parquet(catalog, stage_hint="ingest")[["row_id", "prdtypecode"]]
    rows = rows.merge(
        read_parquet(split, stage_hint="split")[["row_id", "split"]], on="row_id", how="inner", validate="one_to_one"
    )
    table = read_parquet(quality, stage_hint="image_clean")
    missing_cols = [c for c in QUALITY_COLUMNS if c not in table.columns]
    if missing_cols:
        raise PipelineError(f"{quality}: missing column {missing_cols[0]}; expected {', '.join(QUALITY_COLUMNS)}")
    frame = rows.merge(table[list(QUALITY_COLUMNS)], on="row_id", how="left", validate="one_to_one")
    absent = frame["clean_path"].isna()
    if absent.any():
        raise PipelineError(
            f"{quality}: no row for row_id {frame.loc[absent, 'row_id'].iloc[0]}; expected one "
            "row per catalog row (rerun `dvc repro image_clean`)"
        )
    return frame


def usable_train_rows(frame: pd.DataFrame, cfg: ResnetConfig) -> tuple[pd.DataFrame, dict]:
    """Train rows the network learns from, and the accounting of those left out and why."""
    keep = frame["keep_for_train"].fillna(False).to_numpy(dtype=bool)
    readable = frame["readable"].fillna(False).to_numpy(dtype=bool)
    counts = {
        "train_rows": int(len(frame)),
        "dropped_keep_for_train_false": int((~keep).sum()),
        "dropped_unreadable": int((keep & ~readable).sum()),
    }
    usable = frame[keep & readable]
    capped = stratified_cap(usable["prdtypecode"].to_numpy(dtype=np.int64), cfg.max_train_rows, cfg.seed)
    counts["dropped_max_train_rows"] = int(len(usable) - len(capped))
    usable = usable.iloc[capped].reset_index(drop=True)
    counts["train_rows_used"] = int(len(usable))
    return usable, counts


def image_paths(frame: pd.DataFrame) -> list[str]:
    """``clean_path`` of every row (relative to the repository root or absolute); a missing file names its row."""
    if "clean_path" not in frame.columns:
        raise PipelineError(
            "model frame: missing column clean_path; expected the image_clean columns "
            "(data/processed/image_quality.parquet)"
        )
    paths = frame["clean_path"].astype(str).tolist()
    for row_id, path in zip(frame["row_id"].tolist(), paths):
        if not Path(path).is_file():
            raise PipelineError(
                f"row_id {row_id}, column clean_path: {path} not found; "
                "expected the cleaned image (rerun `dvc repro image_clean`)"
            )
    return paths

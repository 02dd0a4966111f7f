"""``clean_frame``: the whole image cleaning of a set of catalog rows (the ``image_clean`` stage and
the ``rakuten predict`` CLI both call it).

Per image (in a process pool, see :mod:`rakuten.image.process`): decode once, measure, correct,
write ``<out_dir>/<row_id>.jpg``. Hashes and duplicate groups (exact: same file SHA-1; near: pHash
radius search) come from the ``image_hash`` stage's table (:func:`rakuten.image.image_hash.hash_catalog`,
run before the split so that near duplicates never straddle splits). When labels and splits are
given, the study's duplicate policy for training follows (:mod:`rakuten.image.policy`). New rows
(``rakuten predict``: no labels, no hash table) are not hashed: groups only serve the policy, and
the cleaned image does not depend on them.

Output columns (``data/processed/image_quality.parquet``): row_id, clean_path, readable, sha1,
phash, exact_dup_group, near_dup_group, blur_score, is_blurry, red_ratio, is_red_cast,
border_fraction, has_border, actions, keep_for_train, sample_weight, plus decode_status
(ok / converted_* / truncated / missing / unreadable / tiny) and red_ratio_after (measured on the
written image).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path
from rakuten.core.parallel import process_pool
from rakuten.image.config import ImageCleanConfig
from rakuten.image.decode import rows_and_paths
from rakuten.image.image_hash import HashConfig, hash_catalog
from rakuten.image.policy import duplicate_policy
from rakuten.image.process import clean_task

log = logging.getLogger(__name__)

COLUMNS = [
    "row_id",
    "clean_path",
    "readable",
    "sha1",
    "phash",
    "exact_dup_group",
    "near_dup_group",
    "blur_score",
    "is_blurry",
    "red_ratio",
    "is_red_cast",
    "border_fraction",
    "has_border",
    "actions",
    "keep_for_train",
    "sample_weight",
    "decode_status",
    "red_ratio_after",
]


def run_tasks(tasks: list[tuple], n_jobs: int) -> list[dict]:
    """Clean every task, in a pool of ``n_jobs`` processes (in-process when 1), in input order."""
    progress = dict(total=len(tasks), desc="image_clean", unit="img", mininterval=2.0)
    if n_jobs <= 1 or len(tasks) < 2:
        return [clean_task(t) for t in tqdm(tasks, **progress)]
    chunk = max(1, min(64, len(tasks) // (n_jobs * 8)))
    with process_pool(n_jobs) as pool:
        return list(tqdm(pool.map(clean_task, tasks, chunksize=chunk), **progress))


def _labels_and_splits(row_ids: np.ndarray, labels_split: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("row_id", "prdtypecode", "split") if c not in labels_split.columns]
    if missing:
        raise PipelineError(f"labels_split: missing column '{missing[0]}'; expected row_id, prdtypecode, split")
    table = labels_split.drop_duplicates("row_id").set_index("row_id").reindex(row_ids)
    labels = pd.to_numeric(table["prdtypecode"], errors="coerce").fillna(-1).to_numpy(np.int64)
    splits = table["split"].astype(object).fillna("").to_numpy()
    return labels, splits


def _aligned_hashes(row_ids: np.ndarray, hashes: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("row_id", "sha1", "phash", "exact_dup_group", "near_dup_group") if c not in hashes.columns]
    if missing:
        raise PipelineError(f"image hashes: missing column '{missing[0]}'; expected the image_hash stage's table")
    table = hashes.drop_duplicates("row_id").set_index("row_id")
    absent = np.setdiff1d(row_ids, table.index.to_numpy())
    if len(absent):
        raise PipelineError(
            f"image hashes: no row for row_id {int(absent[0])} ({len(absent)} rows missing); "
            "expected one row per catalog row (rerun image_hash)"
        )
    return table.loc[row_ids]


def _train_policy(
    table: pd.DataFrame,
    row_ids: np.ndarray,
    readable: np.ndarray,
    labels_split: pd.DataFrame | None,
    cfg: ImageCleanConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """``(keep_for_train, sample_weight)``: the duplicate policy when labels are known, else every readable row."""
    if labels_split is None:
        return readable.copy(), np.ones(len(table))
    labels, splits = _labels_and_splits(row_ids, labels_split)
    return duplicate_policy(
        table["near_dup_group"].to_numpy(),
        labels,
        splits == "train",
        table["blur_score"].to_numpy(float),
        readable,
        cfg.near_duplicates.cross_class_weight,
    )


def _log_counts(table: pd.DataFrame, readable: np.ndarray) -> None:
    log.info(
        "%d images: %d unreadable, %d exact-duplicate groups, %d near-duplicate clusters, "
        "%d blurry, %d red cast, %d bordered",
        len(table),
        int((~readable).sum()),
        int(table["exact_dup_group"].max() + 1),
        int(table["near_dup_group"].max() + 1),
        int(table["is_blurry"].sum()),
        int(table["is_red_cast"].sum()),
        int(table["has_border"].sum()),
    )


def _no_hashes(row_ids: np.ndarray) -> pd.DataFrame:
    """The hash columns of rows that are not hashed: no SHA-1, no pHash, in no group."""
    n = len(row_ids)
    return pd.DataFrame(
        {
            "row_id": row_ids,
            "sha1": [""] * n,
            "phash": [""] * n,
            "exact_dup_group": np.full(n, -1, np.int64),
            "near_dup_group": np.full(n, -1, np.int64),
        }
    )


def clean_frame(
    catalog_rows: pd.DataFrame,
    out_dir: str | os.PathLike,
    cfg: ImageCleanConfig,
    labels_split: pd.DataFrame | None = None,
    hashes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Clean the images of ``catalog_rows`` (needs ``row_id``, ``image_path``) into ``out_dir``.

    ``out_dir`` is written atomically as a whole (replaced if it exists); ``clean_path`` is
    ``out_dir/<row_id>.jpg`` as given (relative paths stay relative). ``labels_split`` (row_id,
    prdtypecode, split) switches on the duplicate policy; without it every readable row is kept
    with weight 1. ``hashes`` is the ``image_hash`` table (row_id, sha1, phash, exact_dup_group,
    near_dup_group) covering these rows; when None it is computed here if ``labels_split`` needs it,
    else left empty (``sha1``/``phash`` "", groups -1: new rows are not hashed).
    ``table.attrs["timing_s"]`` holds the seconds spent on the images and on hashing (0 when given
    or skipped; read by the benchmark).
    """
    row_ids, sources = rows_and_paths(catalog_rows, "catalog rows")
    out_dir = Path(out_dir)
    start = time.perf_counter()
    if hashes is None and labels_split is None:  # new rows: no policy to feed, so nothing to hash
        hashes = _no_hashes(row_ids)
    elif hashes is None:
        hashes = hash_catalog(catalog_rows, HashConfig(n_jobs=cfg.n_jobs, min_side=cfg.min_side))
    hashes = _aligned_hashes(row_ids, hashes)
    hashing_s = time.perf_counter() - start
    start = time.perf_counter()
    with atomic_path(out_dir, is_dir=True) as tmp:
        records = run_tasks([(int(r), s, str(tmp), cfg) for r, s in zip(row_ids, sources)], cfg.n_jobs)
    if not records:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    table = pd.DataFrame(records)
    readable = table["readable"].to_numpy(bool)
    for column in ("sha1", "phash", "exact_dup_group", "near_dup_group"):
        table[column] = hashes[column].to_numpy()
    table.attrs["timing_s"] = {"images": time.perf_counter() - start, "hashing": hashing_s}
    table["keep_for_train"], table["sample_weight"] = _train_policy(table, row_ids, readable, labels_split, cfg)
    table["clean_path"] = [(out_dir / f"{r}.jpg").as_posix() for r in row_ids]
    _log_counts(table, readable)
    out = table[COLUMNS]
    out.attrs = table.attrs
    return out

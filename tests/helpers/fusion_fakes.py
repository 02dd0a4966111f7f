"""Constructed probability tables with known answers, for the fusion / evaluate / predict tests.

A model "knows" a set of classes: on rows of those classes its logits favour the true class by
``strength``; elsewhere it only sees noise. Two models knowing complementary halves are each
right on about half the rows, and a good fusion is right on nearly all of them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, indices_to_codes
from rakuten.contracts.model_files import proba_frame
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.meta import LinearSvmMeta, LogregMeta, XgboostMeta

FIRST_HALF = tuple(range(14))
SECOND_HALF = tuple(range(14, N_CLASSES))
ALL = tuple(range(N_CLASSES))


def split_rows(per_class: int = 12, n_official: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of the probability contract (val, test: ``per_class`` rows per class; official_test) and
    their true class indices (-1 for official test rows)."""
    rng = np.random.default_rng(seed)
    parts, y = [], []
    for split in ("val", "test"):
        idx = np.repeat(np.arange(N_CLASSES), per_class)
        rng.shuffle(idx)
        parts.append(pd.DataFrame({"split": split, "prdtypecode": indices_to_codes(idx)}))
        y.append(idx)
    official_idx = rng.integers(0, N_CLASSES, n_official)
    parts.append(pd.DataFrame({"split": "official_test", "prdtypecode": [None] * n_official}))
    y.append(official_idx)
    rows = pd.concat(parts, ignore_index=True)
    rows["prdtypecode"] = pd.array(rows["prdtypecode"], dtype="Int64")
    rows.insert(0, "row_id", np.arange(len(rows), dtype=np.int64) * 3 + 5)  # not 0..n-1 on purpose
    return rows, np.concatenate(y)


def model_proba(y: np.ndarray, knows: tuple[int, ...] | None, strength: float = 4.0, seed: int = 1) -> np.ndarray:
    """Softmax of noisy logits; rows whose class is in ``knows`` get ``strength`` on the true class.
    ``knows=None`` is a useless model (pure noise)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (len(y), N_CLASSES))
    if knows is not None:
        mask = np.isin(y, knows)
        logits[mask, y[mask]] += strength
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_tables(
    spec: dict[str, tuple[int, ...] | None], per_class: int = 12, seed: int = 0, strength: float = 4.0
) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    """One contract table per model name in ``spec`` (name -> classes it knows), same rows."""
    rows, y = split_rows(per_class, seed=seed)
    tables = {
        name: proba_frame(rows, model_proba(y, knows, strength, seed=seed + 1 + i))
        for i, (name, knows) in enumerate(spec.items())
    }
    return tables, y


def small_config(models: list[str], **overrides) -> FusionConfig:
    """A fast fusion config (few XGBoost rounds, 3 folds) for tests."""
    cfg = FusionConfig(
        models=tuple(models),
        weights={m: 1.0 for m in models},
        weight_step=0.1,
        cv_folds=3,
        seed=0,
        n_jobs=1,
        logreg=LogregMeta(C=1.0, max_iter=500),
        linear_svm=LinearSvmMeta(C=1.0),
        xgboost=XgboostMeta(n_estimators=8, max_depth=2, learning_rate=0.3, subsample=1.0),
    )
    return replace(cfg, **overrides)


def write_stage_inputs(
    root: Path, tables: dict[str, pd.DataFrame], image_missing: tuple[int, ...] = (), text_empty: tuple[int, ...] = ()
) -> None:
    """The files the fusion / evaluate / predict stages read, under ``root`` (a scratch repo)."""
    any_table = next(iter(tables.values()))
    (root / "reports/probs").mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(root / f"reports/probs/{name}.parquet", index=False)
    ids = any_table["row_id"].to_numpy()
    (root / "data/interim").mkdir(parents=True, exist_ok=True)
    (root / "data/processed").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"row_id": ids, "split": any_table["split"].to_numpy(), "group_id": ids}).to_parquet(
        root / "data/interim/split.parquet", index=False
    )
    pd.DataFrame({"row_id": ids, "text_empty": np.isin(ids, text_empty)}).to_parquet(
        root / "data/processed/text.parquet", index=False
    )
    images = root / "data/processed/images"  # the report's thumbnails: one small grey JPEG per row
    images.mkdir(parents=True, exist_ok=True)
    grey = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    for i in ids:
        (images / f"{i}.jpg").write_bytes(grey)
    pd.DataFrame(
        {
            "row_id": ids,
            "readable": ~np.isin(ids, image_missing),
            "clean_path": [f"data/processed/images/{i}.jpg" for i in ids],
        }
    ).to_parquet(root / "data/processed/image_quality.parquet", index=False)
    official = any_table["split"].to_numpy() == "official_test"
    pd.DataFrame(
        {
            "row_id": ids,
            "orig_index": ids + 84916,
            "is_official_test": official,
            "designation": [f"product {i}" for i in ids],
            "prdtypecode": any_table["prdtypecode"],
        }
    ).to_parquet(root / "data/interim/catalog.parquet", index=False)
    # the label audit's outputs the evaluate stage's report reads: one flagged row, no ground truth (raw-like)
    (root / "reports/label_issues.csv").write_text(f"row_id,given,suggested,score\n{ids[0]},10,40,0.01\n")
    (root / "reports/label_audit.json").write_text('{"rows_audited": 1, "flagged": 1}\n')


__all__ = [
    "CLASS_CODES",
    "FIRST_HALF",
    "SECOND_HALF",
    "ALL",
    "split_rows",
    "model_proba",
    "make_tables",
    "small_config",
    "write_stage_inputs",
]

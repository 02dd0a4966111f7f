"""What every model stage (``tfidf_svm``, ``fasttext``, ``camembert``, ``resnet50``) shares: fit on
``split == train`` of ``training_split.parquet`` (split.parquet less the rows the label audit drops), score
val/test, write the contract files and the per-class report; plus the text models' input frame
(:func:`load_text_frame`).

Kept out of the stage scripts so they stay a dozen lines, and reusable for any model module that
follows the ``train / predict_proba / save / load`` interface.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from rakuten.contracts.classes import PROBA_COLUMNS, indices_to_codes
from rakuten.contracts.metrics import per_class_report
from rakuten.contracts.model_files import (
    PREDICTED_SPLITS,
    SCORED_SPLITS,
    TRAINING_SPLIT,
    proba_frame,
    write_model_outputs,
)
from rakuten.core.io import read_parquet, write_csv

log = logging.getLogger(__name__)

CATALOG = Path("data/interim/catalog.parquet")
SPLIT = TRAINING_SPLIT  # split.parquet less the rows label_audit drops (label_audit.label_noise)
TEXT = Path("data/processed/text.parquet")
PER_CLASS_DIR = Path("reports/per_class")


def load_text_frame(catalog: Path = CATALOG, split: Path = SPLIT, text: Path = TEXT) -> pd.DataFrame:
    """Catalog rows joined on ``row_id`` with their split and the ``text.parquet`` columns."""
    rows = read_parquet(catalog, stage_hint="ingest")[["row_id", "prdtypecode"]]
    rows = rows.merge(
        read_parquet(split, stage_hint="split")[["row_id", "split"]], on="row_id", how="inner", validate="one_to_one"
    )
    texts = read_parquet(text, stage_hint="text_clean")
    frame = rows.merge(texts, on="row_id", how="inner", validate="one_to_one")
    if len(frame) != len(rows):
        missing = sorted(set(rows["row_id"]) - set(frame["row_id"]))[:1]
        from rakuten.core.errors import PipelineError

        raise PipelineError(
            f"{text}: no row for row_id {missing[0]}; expected one row per catalog row (rerun `dvc repro text_clean`)"
        )
    return frame


def per_class_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per-class precision/recall/F1/support for every scored split, stacked with a ``split`` column."""
    parts = []
    for split in SCORED_SPLITS:
        part = table[table["split"] == split]
        if len(part):
            pred = indices_to_codes(part[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1))
            report = per_class_report(part["prdtypecode"].to_numpy(dtype=np.int64), pred)
            report.insert(0, "split", split)
            parts.append(report)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def fit_and_report(
    name: str,
    module: ModuleType,
    config: Any,
    frame: pd.DataFrame,
    model_dir: Path | None = None,
    predict_threads: int | None = None,
    **train_options: Any,
) -> tuple[Any, dict]:
    """Train ``module`` on the train rows, write ``models/<name>/``, the probabilities, the metrics
    and ``reports/per_class/<name>.csv``; return the model and the metrics.

    ``predict_threads``: torch CPU threads of the final predictions (0 = all cores; None = as training left
    them), for a model whose predictions are the same bits whatever the count. ``train_options`` go to
    ``module.train`` beside the config: run-time arguments that are not knobs (e.g. the deep models'
    ``live_dir`` for their learning curves)."""
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    val = frame[frame["split"] == "val"].reset_index(drop=True)
    start = time.perf_counter()
    model = module.train(train, val, config, **train_options)
    fit_s = time.perf_counter() - start
    module.save(model, model_dir or Path("models") / name)
    scored = frame[frame["split"].isin(PREDICTED_SPLITS)].reset_index(drop=True)
    if predict_threads is None:
        proba = module.predict_proba(model, scored)
    else:
        from rakuten.runtime.torch_setup import threads  # torch only for the models that run on it

        with threads(predict_threads):
            proba = module.predict_proba(model, scored)
    table = proba_frame(scored, proba)
    # no timings in the metrics file: a forced rerun must reproduce it byte for byte
    metrics = write_model_outputs(name, table, {"train_rows": int(len(train))})
    write_csv(per_class_table(table), PER_CLASS_DIR / f"{name}.csv")
    log.info("%s: fitted in %.1f s; val %s, test %s", name, fit_s, metrics.get("val"), metrics.get("test"))
    return model, metrics

"""What the ``label_audit`` stage calls: the audited rows, the models' fitters, the audit and its figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from rakuten.contracts.classes import codes_to_indices
from rakuten.contracts.metrics import scores
from rakuten.contracts.model_files import SPLIT
from rakuten.core.errors import PipelineError
from rakuten.core.io import read_parquet
from rakuten.evaluation.label_audit import image_features
from rakuten.evaluation.label_audit.config import VIEWS, LabelAuditConfig
from rakuten.evaluation.label_audit.crossfit import GROUP, LABEL, Fitter, out_of_fold, pool
from rakuten.evaluation.label_audit.issues import find_issues, issue_table
from rakuten.models import fasttext, tfidf_svm
from rakuten.models.runner import CATALOG, TEXT, load_text_frame

log = logging.getLogger(__name__)

QUALITY = Path("data/processed/image_quality.parquet")
ISSUES = Path("reports/label_issues.csv")
REPORT = Path("reports/label_audit.json")
#: the model modules the audit cross-fits (the model interface: ``train`` / ``predict_proba``)
MODULES = {"tfidf_svm": tfidf_svm, "fasttext": fasttext, "image_features": image_features}
#: rows a class needs in a fit (tfidf_svm's calibrated SVM needs 2): a rarer class sits that fit out
MIN_CLASS_ROWS = 2


def load_audit_frame(
    cfg: LabelAuditConfig,
    catalog: Path = CATALOG,
    split: Path = SPLIT,
    text: Path = TEXT,
    quality: Path = QUALITY,
    root: Path = Path("."),
) -> pd.DataFrame:
    """The train rows of ``split`` (the split stage's, not the training split this stage writes) with their
    label, duplicate group and cleaned text, plus their image features when ``cfg.models`` needs them."""
    frame = load_text_frame(catalog, split, text)
    groups = read_parquet(split, stage_hint="split")[["row_id", GROUP]]
    frame = frame[frame["split"] == "train"].merge(groups, on="row_id", validate="one_to_one")
    frame = frame.sort_values("row_id", kind="stable").reset_index(drop=True)
    if "image_features" in cfg.models:
        images = read_parquet(quality, stage_hint="image_clean")[["row_id", "clean_path", "readable"]]
        frame = frame.merge(images, on="row_id", how="left", validate="one_to_one")
        readable = frame["readable"].fillna(False).to_numpy(dtype=bool)
        paths = frame["clean_path"].fillna("").tolist()
        matrix = image_features.feature_matrix(paths, readable, root, cfg.processes())
        frame[image_features.FEATURES] = list(matrix)
        log.info("image features of %d rows (%d without a readable image)", len(frame), int(matrix[:, -1].sum()))
    return frame


@dataclass(frozen=True)
class ModelFitter:
    """``fit(train, held_out) -> probabilities`` of one audited model (:data:`MODULES`), trained with its params
    section; a plain object rather than a closure, so the folds can be fitted in other processes."""

    name: str
    config: Any = None

    def __call__(self, train: pd.DataFrame, held: pd.DataFrame) -> np.ndarray:
        module = MODULES[self.name]
        return module.predict_proba(module.train(_fittable(train), None, self.config), held)


def fitters(models: tuple[str, ...], configs: Mapping[str, Any]) -> dict[str, Fitter]:
    """One ``fit(train, held_out) -> probabilities`` per audited model, each trained with its params section
    (``configs[name]``; the image features model has none)."""
    missing = [m for m in models if m != "image_features" and m not in configs]
    if missing:
        raise PipelineError(f"label_audit.models: no params section parsed for {missing[0]}")
    return {name: ModelFitter(name, configs.get(name)) for name in models}


def _fittable(train: pd.DataFrame) -> pd.DataFrame:
    """``train`` less the rows of classes with fewer than :data:`MIN_CLASS_ROWS` rows: the split puts a class
    with few duplicate groups in train only, and a fold can leave it a single row to fit on. The held-out
    rows of such a class are still predicted (by the other classes: their given label gets no probability)."""
    counts = train[LABEL].map(train[LABEL].value_counts())
    return train[counts >= MIN_CLASS_ROWS].reset_index(drop=True)


@dataclass
class AuditResult:
    """The audit of one set of train rows: the flagged rows and the figures of ``label_audit.json``."""

    issues: pd.DataFrame  # row_id, given, suggested, score (flagged rows only)
    probs: dict[str, np.ndarray]  # each model's out-of-fold probabilities
    pooled: np.ndarray
    folds: np.ndarray  # fold of each row
    figures: dict[str, Any]


def run_audit(frame: pd.DataFrame, cfg: LabelAuditConfig, fit: Mapping[str, Fitter]) -> AuditResult:
    """Cross-fit every model, pool the probabilities and flag the likely mislabelled rows."""
    if frame.empty:
        raise PipelineError("data/interim/split.parquet: no train rows; expected rows to audit")
    given = frame[LABEL].to_numpy(dtype=np.int64)
    probs, folds = out_of_fold(frame, fit, cfg.folds, cfg.seed, cfg.processes())
    pooled = pool(probs, cfg.pooling, VIEWS)
    flagged, quality = find_issues(given, pooled, cfg.filter_by)
    issues = issue_table(frame["row_id"].to_numpy(), given, pooled, quality, flagged)
    labels = codes_to_indices(given)
    oof_f1 = {name: scores(labels, p.argmax(axis=1))["weighted_f1"] for name, p in probs.items()}
    figures = {
        "rows_audited": int(len(frame)),
        "flagged": int(len(issues)),
        "flagged_share": round(len(issues) / len(frame), 6),
        "oof_weighted_f1": {**oof_f1, "pooled": scores(labels, pooled.argmax(axis=1))["weighted_f1"]},
    }
    log.info("label_audit: %d of %d train rows flagged; out-of-fold weighted F1 %s", len(issues), len(frame), oof_f1)
    return AuditResult(issues, probs, pooled, folds, figures)

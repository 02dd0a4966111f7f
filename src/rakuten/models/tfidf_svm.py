"""TF-IDF + a classic classifier (the study's best text baseline: LinearSVC C=1, balanced, 0.8172).

One imbalanced-learn ``Pipeline``: ``TfidfVectorizer`` -> optional resampler (``none | smote |
smote_under``, applied at fit time only) -> classifier (``svm`` = LinearSVC wrapped in
``CalibratedClassifierCV`` so fusion gets probabilities, ``rf``, ``sgd`` = log-loss SGD,
``logreg``). Optional grid search: cross-validation on the training rows scored by weighted F1,
then a refit of the best configuration on all training rows.

Interface shared by every model module: ``train``, ``predict_proba``, ``save``, ``load``.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from imblearn.under_sampling import RandomUnderSampler
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS, N_CLASSES
from rakuten.core.config import ConfigError, check_value, invalid, knob, parse_section, replace_at
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path

log = logging.getLogger(__name__)

NAME = "tfidf_svm"
CLASSIFIERS = ("svm", "rf", "sgd", "logreg")
RESAMPLERS = ("none", "smote", "smote_under")
TEXT_COLUMNS = ("text_norm", "text_light")
#: knobs a grid search may vary (dotted names in the section); each value is checked against its knob
GRID_KEYS = ("C", "max_features", "max_df", "min_df", "ngram_max", "sgd.alpha", "rf.n_estimators", "rf.max_depth")


@dataclass(frozen=True)
class RandomForestConfig:
    """``tfidf_svm.rf``: the random forest (``classifier: rf``)."""

    n_estimators: int = knob(200, "trees", lo=1)
    max_depth: int = knob(0, "0 = unlimited", lo=0)


@dataclass(frozen=True)
class SgdConfig:
    """``tfidf_svm.sgd``: the log-loss SGD classifier (``classifier: sgd``)."""

    alpha: float = knob(0.0001, "regularisation strength", lo=0.0, lo_open=True)


@dataclass(frozen=True)
class TfidfSvmConfig:
    """``tfidf_svm``: TF-IDF + classic classifier on text_norm (study best: LinearSVC C=1 balanced, 0.8172)."""

    text_column: str = knob("text_norm", "input column of data/processed/text.parquet", choices=TEXT_COLUMNS)
    max_features: int = knob(10000, "vocabulary size (most frequent terms kept)", lo=1)
    min_df: int = knob(1, "terms in fewer documents are ignored", lo=1)
    max_df: float = knob(0.85, "terms in a larger share of documents are ignored", lo=0.0, hi=1.0, lo_open=True)
    ngram_min: int = knob(1, "shortest word n-gram", lo=1, hi=5)
    ngram_max: int = knob(2, "longest word n-gram", lo=1, hi=5)
    sublinear_tf: bool = knob(True, "1 + log(tf) instead of raw term counts")
    classifier: str = knob(
        "svm", "svm (LinearSVC, calibrated probabilities) | rf | sgd (log-loss) | logreg", choices=CLASSIFIERS
    )
    C: float = knob(1.0, "inverse regularisation of svm and logreg", lo=0.0, lo_open=True)
    class_weight: str = knob("balanced", "balanced | none", choices=("balanced", "none"))
    max_iter: int = knob(5000, "solver iterations (svm, sgd, logreg)", lo=1)
    calibration: str = knob(
        "sigmoid",
        "svm probabilities: CalibratedClassifierCV on train folds (sigmoid | isotonic)",
        choices=("sigmoid", "isotonic"),
    )
    calibration_cv: int = knob(3, "calibration folds", lo=2, hi=10)
    rf: RandomForestConfig = knob(RandomForestConfig(), "random forest (classifier: rf)")
    sgd: SgdConfig = knob(SgdConfig(), "log-loss SGD (classifier: sgd)")
    resample: str = knob(
        "none", "none | smote | smote_under (under-sample above median, SMOTE below)", choices=RESAMPLERS
    )
    smote_k: int = knob(5, "SMOTE neighbours (capped below the smallest class)", lo=1, hi=50)
    grid: dict[str, tuple[int | float, ...]] = knob(
        {}, "e.g. {C: [0.1, 1, 10]}: CV on train scored by weighted F1, best refitted; keys: " + ", ".join(GRID_KEYS)
    )
    grid_cv: int = knob(3, "grid-search folds", lo=2, hi=10)
    top_terms: int = knob(20, "terms per class in reports/top_terms/tfidf_svm.csv", lo=1, hi=1000)
    seed: int = knob(42, "seed of the classifier, calibration folds and resampling", lo=0)
    n_jobs: int = knob(2, "parallel jobs (calibration folds, random forest, SGD)", lo=1, hi=64)

    def validate(self, key: str) -> None:
        if self.ngram_min > self.ngram_max:
            raise ConfigError(
                f"{key}.ngram_min = {self.ngram_min} > {key}.ngram_max = {self.ngram_max}, "
                "expected ngram_min <= ngram_max"
            )
        for name, values in self.grid.items():
            if name not in GRID_KEYS:
                raise ConfigError(f"{key}.grid.{name} is not searchable; expected one of {', '.join(GRID_KEYS)}")
            if not values:
                raise invalid(f"{key}.grid.{name}", [], "a non-empty list of values")
            for i, value in enumerate(values):
                check_value(TfidfSvmConfig, name, value, f"{key}.grid.{name}[{i}]")


# ---------------------------------------------------------------- resampling


def _below_median_up(y: np.ndarray) -> dict:
    """SMOTE target of ``smote_under``: classes under the median count raised to the median."""
    codes, counts = np.unique(y, return_counts=True)
    median = int(np.median(counts))
    return {c: median for c, n in zip(codes, counts) if n < median}


def _above_median_down(y: np.ndarray) -> dict:
    """Under-sampling target of ``smote_under``: classes over the median count cut to the median."""
    codes, counts = np.unique(y, return_counts=True)
    median = int(np.median(counts))
    return {c: (median if n > median else int(n)) for c, n in zip(codes, counts)}


def _smallest_class(y: np.ndarray, fit_share: float) -> int:
    """Rows of the rarest class that a fit will see (``fit_share`` < 1 inside cross-validation)."""
    return int(np.unique(y, return_counts=True)[1].min() * fit_share)


def _smote(cfg: TfidfSvmConfig, smallest: int, strategy) -> SMOTE:
    # k_neighbors must be below the smallest class count, or SMOTE cannot build neighbours
    k = max(1, min(cfg.smote_k, smallest - 1))
    return SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=cfg.seed)


def _resampling_steps(cfg: TfidfSvmConfig, smallest: int) -> list[tuple[str, Any]]:
    if cfg.resample == "smote":
        return [("smote", _smote(cfg, smallest, "not majority"))]
    if cfg.resample == "smote_under":
        return [
            ("under", RandomUnderSampler(sampling_strategy=_above_median_down, random_state=cfg.seed)),
            ("smote", _smote(cfg, smallest, _below_median_up)),
        ]
    return []


# ---------------------------------------------------------------- pipeline


def _classifier(cfg: TfidfSvmConfig, smallest: int):
    weight = "balanced" if cfg.class_weight == "balanced" else None
    if cfg.classifier == "svm":
        # dual=True: sklearn's "auto" picks the primal solver when rows > features, measured 7x slower on
        # sparse TF-IDF with bigrams (20k rows: 42.7 s vs 5.9 s); the dual converges fast on text
        svm = LinearSVC(C=cfg.C, class_weight=weight, dual=True, max_iter=cfg.max_iter, random_state=cfg.seed)
        if smallest < 2:
            raise PipelineError(
                f"tfidf_svm: a class has {smallest} training row(s); calibrating the SVM "
                "needs at least 2 per class (use more data or another classifier)"
            )
        folds = StratifiedKFold(n_splits=max(2, min(cfg.calibration_cv, smallest)), shuffle=True, random_state=cfg.seed)
        return CalibratedClassifierCV(svm, method=cfg.calibration, cv=folds, n_jobs=cfg.n_jobs)
    if cfg.classifier == "rf":
        return RandomForestClassifier(
            n_estimators=cfg.rf.n_estimators,
            max_depth=cfg.rf.max_depth or None,
            class_weight=weight,
            n_jobs=cfg.n_jobs,
            random_state=cfg.seed,
        )
    if cfg.classifier == "sgd":
        return SGDClassifier(
            loss="log_loss",
            alpha=cfg.sgd.alpha,
            class_weight=weight,
            max_iter=cfg.max_iter,
            tol=1e-4,
            random_state=cfg.seed,
            n_jobs=cfg.n_jobs,
        )
    return LogisticRegression(C=cfg.C, class_weight=weight, max_iter=cfg.max_iter, random_state=cfg.seed)


def build_pipeline(cfg: TfidfSvmConfig, y: np.ndarray, fit_share: float = 1.0) -> Pipeline:
    """The unfitted vectorizer -> resampler -> classifier pipeline for ``cfg``.

    ``y`` (and ``fit_share``, the part of it a cross-validation fold fits on) sizes the calibration
    folds and SMOTE's neighbours so that tiny classes never break a fit.
    """
    smallest = _smallest_class(y, fit_share)
    if cfg.classifier == "svm" and smallest < 2:
        codes, counts = np.unique(y, return_counts=True)
        rare = [f"{int(c)} ({int(n * fit_share)} row(s))" for c, n in zip(codes, counts) if int(n * fit_share) < 2]
        raise PipelineError(
            f"tfidf_svm: prdtypecode {', '.join(rare)}: fewer than 2 training rows; calibrating the "
            "SVM needs at least 2 per class (use more data or another classifier: rf, sgd, logreg)"
        )
    tfidf = TfidfVectorizer(
        max_features=cfg.max_features,
        min_df=cfg.min_df,
        max_df=cfg.max_df,
        ngram_range=(cfg.ngram_min, cfg.ngram_max),
        sublinear_tf=cfg.sublinear_tf,
        dtype=np.float32,
    )
    return Pipeline([("tfidf", tfidf), *_resampling_steps(cfg, smallest), ("clf", _classifier(cfg, smallest))])


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        raise PipelineError(f"model frame: missing column {column}; expected text.parquet joined on row_id")
    return frame[column].fillna("").to_numpy(dtype=object).tolist()


def _labels(frame: pd.DataFrame) -> np.ndarray:
    if "prdtypecode" not in frame.columns or frame["prdtypecode"].isna().any():
        raise PipelineError("training frame: column prdtypecode must be present and filled on every row")
    return frame["prdtypecode"].to_numpy(dtype=np.int64)


@dataclass
class TfidfModel:
    """A fitted pipeline with the config that built it (and the grid results, if any)."""

    pipeline: Pipeline
    config: TfidfSvmConfig
    grid_results: list[dict] = field(default_factory=list)


def grid_search(cfg: TfidfSvmConfig, texts: list[str], y: np.ndarray) -> tuple[TfidfSvmConfig, list[dict]]:
    """Cross-validated weighted F1 of every combination in ``cfg.grid``; returns the best config."""
    keys = sorted(cfg.grid)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    folds = StratifiedKFold(n_splits=max(2, min(cfg.grid_cv, smallest)), shuffle=True, random_state=cfg.seed)
    results = []
    for values in itertools.product(*(cfg.grid[k] for k in keys)):
        candidate = _with_values(cfg, dict(zip(keys, values)))
        pipeline = build_pipeline(candidate, y, fit_share=1 - 1 / folds.get_n_splits())
        score = cross_val_score(pipeline, texts, y, cv=folds, scoring="f1_weighted", error_score="raise")
        results.append({**dict(zip(keys, values)), "cv_weighted_f1": round(float(score.mean()), 6)})
        log.info("grid %s: cv weighted F1 %.4f", dict(zip(keys, values)), score.mean())
    best = max(results, key=lambda r: r["cv_weighted_f1"])
    return _with_values(cfg, {k: best[k] for k in keys}), results


def _with_values(cfg: TfidfSvmConfig, values: dict[str, Any]) -> TfidfSvmConfig:
    """``cfg`` with the grid's knobs set to ``values`` (typed by their declaration) and no grid left."""
    out = replace(cfg, grid={})
    for name, value in values.items():
        out = replace_at(out, name, check_value(TfidfSvmConfig, name, value, f"{NAME}.grid.{name}"))
    return out


def train(train_frame: pd.DataFrame, val_frame: pd.DataFrame | None, cfg: TfidfSvmConfig) -> TfidfModel:
    """Fit on ``train_frame`` only (``val_frame`` is unused: nothing here is tuned on val)."""
    texts, y = _texts(train_frame, cfg.text_column), _labels(train_frame)
    results: list[dict] = []
    if cfg.grid:
        cfg, results = grid_search(cfg, texts, y)
    log.info("fitting TF-IDF + %s (resample=%s) on %d rows", cfg.classifier, cfg.resample, len(texts))
    pipeline = build_pipeline(cfg, y).fit(texts, y)
    return TfidfModel(pipeline, cfg, results)


def predict_proba(model: TfidfModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) probabilities in canonical class order (zero for classes absent from training)."""
    proba = model.pipeline.predict_proba(_texts(frame, model.config.text_column))
    out = np.zeros((len(frame), N_CLASSES), dtype=np.float64)
    columns = [CLASS_CODES.index(int(c)) for c in model.pipeline.classes_]
    out[:, columns] = proba
    return out / out.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- interpretability


def _class_term_weights(model: TfidfModel) -> tuple[np.ndarray, np.ndarray]:
    """(classes, weights[class, term]): linear coefficients, or RF importance x class mean TF-IDF."""
    clf = model.pipeline.named_steps["clf"]
    if isinstance(clf, CalibratedClassifierCV):
        coef = np.mean([c.estimator.coef_ for c in clf.calibrated_classifiers_], axis=0)
        return clf.classes_, coef
    if hasattr(clf, "coef_"):
        return clf.classes_, clf.coef_
    return clf.classes_, None


def top_terms(model: TfidfModel, train_frame: pd.DataFrame | None = None, k: int | None = None) -> pd.DataFrame:
    """The ``k`` highest-weighted terms per class: ``prdtypecode, label, rank, term, weight``.

    Linear classifiers: the class's coefficient (averaged over the calibration folds for the SVM).
    Random forest (no per-class weights): impurity importance x the class's mean TF-IDF value on
    ``train_frame``, i.e. the important terms that are typical of the class.
    """
    k = k or model.config.top_terms
    vocab = model.pipeline.named_steps["tfidf"].get_feature_names_out()
    classes, weights = _class_term_weights(model)
    if weights is None:
        if train_frame is None:
            raise ValueError("top_terms of a random forest needs the training frame")
        x = model.pipeline.named_steps["tfidf"].transform(_texts(train_frame, model.config.text_column))
        y = _labels(train_frame)
        importance = model.pipeline.named_steps["clf"].feature_importances_
        weights = np.vstack([np.asarray(x[y == c].mean(axis=0)).ravel() * importance for c in classes])
    rows = []
    for code, w in zip(classes, weights):
        # stable: equal weights keep vocabulary (alphabetical) order; numpy's default sort orders ties
        # differently with and without AVX-512
        for rank, j in enumerate(np.argsort(-w, kind="stable")[:k], start=1):
            rows.append(
                {
                    "prdtypecode": int(code),
                    "label": CLASS_LABELS[int(code)],
                    "rank": rank,
                    "term": str(vocab[j]),
                    "weight": round(float(w[j]), 6),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- persistence


def save(model: TfidfModel, directory: str | Path) -> None:
    """``model.joblib`` (the fitted pipeline), ``config.json`` and ``grid.json``, written atomically."""
    # scikit-learn caches id(stop_words), a memory address, on the vectoriser; pickled, it would make
    # the file differ on every run. Dropping it only makes sklearn re-validate the stop words once.
    model.pipeline.named_steps["tfidf"].__dict__.pop("_stop_words_id", None)
    with atomic_path(directory, is_dir=True) as tmp:
        joblib.dump(model.pipeline, tmp / "model.joblib", compress=3)
        (tmp / "config.json").write_text(json.dumps(asdict(model.config), indent=2, sort_keys=True) + "\n")
        (tmp / "grid.json").write_text(json.dumps(model.grid_results, indent=2) + "\n")


def load(directory: str | Path) -> TfidfModel:
    directory = Path(directory)
    if not (directory / "model.joblib").is_file():
        raise PipelineError(f"{directory}/model.joblib: not found (run `dvc repro {NAME}`)")
    config = parse_section(
        TfidfSvmConfig, json.loads((directory / "config.json").read_text()), NAME, source=str(directory / "config.json")
    )
    grid = json.loads((directory / "grid.json").read_text()) if (directory / "grid.json").exists() else []
    return TfidfModel(joblib.load(directory / "model.joblib"), config, grid)

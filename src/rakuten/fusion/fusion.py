"""Late fusion of the models' class probabilities (the study's section VI).

Strategies share one small protocol over a *list* of ``(n, 27)`` probability matrices, one per
model, rows aligned: ``fit(probs, y)`` (``y`` = class indices in canonical order) and
``predict_proba(probs) -> (n, 27)``.

- ``max_rule``: per class, the highest probability any model gives (argmax = most confident model).
- ``soft_vote``: weighted mean with weights from params (study: 0.6 text / 0.4 image).
- ``soft_vote_fit``: the same with weights searched on a simplex grid on validation rows.
- ``stacking_<meta>``: a meta-learner (logistic regression, linear SVM, XGBoost) on the
  concatenated probabilities (study's best: XGBoost, 0.9002).
- ``voting_stacking``: the meta-learner on the soft vote plus the raw probabilities (study: below
  plain stacking).

No leakage, by construction: :func:`fit_fusion` receives validation rows only; each strategy's own
validation score is out-of-fold (group-aware stratified K-fold on validation), the strategy is
chosen on that score, and test rows only ever pass through ``predict_proba`` to be reported.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import joblib
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from rakuten.contracts import registry
from rakuten.contracts.classes import N_CLASSES, PROBA_COLUMNS, codes_to_indices, indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.core.config import ConfigError, invalid, knob
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path

log = logging.getLogger(__name__)

META_LEARNERS = ("logreg", "linear_svm", "xgboost")
STRATEGIES = (
    "max_rule",
    "soft_vote",
    "soft_vote_fit",
    "stacking_logreg",
    "stacking_linear_svm",
    "stacking_xgboost",
    "voting_stacking",
)
MODEL_FILE = "fusion.joblib"
SUMMARY_FILE = "fusion.json"


# --------------------------------------------------------------------------- helpers


def _check_inputs(probs: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(probs) == 0:
        raise ValueError("fusion needs at least one probability matrix")
    mats = [np.asarray(p, dtype=np.float64) for p in probs]
    n = mats[0].shape[0]
    for i, m in enumerate(mats):
        if m.ndim != 2 or m.shape != (n, N_CLASSES):
            raise ValueError(f"probability matrix {i}: expected shape ({n}, {N_CLASSES}), got {m.shape}")
    return mats


def normalise_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; an all-zero row becomes uniform."""
    s = m.sum(axis=1, keepdims=True)
    out = np.full_like(m, 1.0 / m.shape[1])
    np.divide(m, s, out=out, where=s > 0)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def weighted_f1(y: np.ndarray, proba: np.ndarray) -> float:
    """Weighted F1 of the argmax, equal to scikit-learn's ``f1_score(average="weighted")``.

    Counted with ``bincount`` because the weight search calls it hundreds of times per fold,
    where ``f1_score``'s input checks dominate the run time.
    """
    pred = proba.argmax(axis=1)
    support = np.bincount(y, minlength=N_CLASSES)
    predicted = np.bincount(pred, minlength=N_CLASSES)
    tp = np.bincount(y[y == pred], minlength=N_CLASSES)
    denom = support + predicted
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(N_CLASSES), where=denom > 0)
    return float((support * f1).sum() / len(y))


def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """All weight vectors with entries in multiples of ``step`` summing to 1, shape (k, n_models)."""
    units = int(round(1.0 / step))
    if units < 1 or abs(units * step - 1.0) > 1e-9:
        raise ValueError(f"weight grid step {step} must divide 1 (e.g. 0.1, 0.05)")
    rows = [c for c in itertools.product(range(units + 1), repeat=n_models) if sum(c) == units]
    return np.array(rows, dtype=np.float64) / units


# --------------------------------------------------------------------------- strategies


class MaxRule:
    """Per class, the highest probability across models (renormalised): the most confident model wins."""

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "MaxRule":
        return self

    def predict_proba(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        return normalise_rows(np.max(np.stack(_check_inputs(probs)), axis=0))


class SoftVote:
    """Weighted mean of the models' probabilities; weights fixed at construction (params)."""

    def __init__(self, weights: Sequence[float]):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"soft vote weights must be non-negative with a positive sum, got {list(weights)}")
        self.weights_ = w / w.sum()

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "SoftVote":
        return self

    def predict_proba(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        mats = _check_inputs(probs)
        if len(mats) != len(self.weights_):
            raise ValueError(f"soft vote has {len(self.weights_)} weights but got {len(mats)} matrices")
        return np.tensordot(self.weights_, np.stack(mats), axes=1)


class FittedSoftVote(SoftVote):
    """Soft vote whose weights maximise validation weighted F1 on a simplex grid.

    Weighted F1 is flat over wide weight ranges, so ties are broken by the lower log loss: a
    model that adds nothing then ends with a low weight instead of an arbitrary one.
    """

    def __init__(self, step: float = 0.1):
        self.step = step
        self.weights_ = np.empty(0)

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "FittedSoftVote":
        stacked = np.stack(_check_inputs(probs))
        y = np.asarray(y, dtype=np.int64)
        best_key, best_w = None, None
        for w in simplex_grid(len(stacked), self.step):
            fused = np.tensordot(w, stacked, axes=1)
            p_true = np.clip(fused[np.arange(len(y)), y], 1e-15, 1.0)
            key = (round(weighted_f1(y, fused), 9), float(np.mean(np.log(p_true))))
            if best_key is None or key > best_key:
                best_key, best_w = key, w
        self.weights_ = best_w
        return self


@dataclass(frozen=True)
class LogregMeta:
    """``fusion.logreg``: the logistic-regression meta-learner."""

    C: float = knob(1.0, "inverse regularisation", lo=0.0, lo_open=True)
    max_iter: int = knob(1000, "solver iterations", lo=1)


@dataclass(frozen=True)
class LinearSvmMeta:
    """``fusion.linear_svm``: the linear SVM meta-learner (probabilities: softmax of its margins)."""

    C: float = knob(1.0, "inverse regularisation", lo=0.0, lo_open=True)


@dataclass(frozen=True)
class XgboostMeta:
    """``fusion.xgboost``: the XGBoost meta-learner (the study's best)."""

    n_estimators: int = knob(200, "boosting rounds", lo=1)
    max_depth: int = knob(3, "tree depth", lo=1)
    learning_rate: float = knob(0.1, "shrinkage", lo=0.0, hi=1.0, lo_open=True)
    subsample: float = knob(0.8, "share of rows per tree", lo=0.0, hi=1.0, lo_open=True)


META_PARAMS = {"logreg": LogregMeta, "linear_svm": LinearSvmMeta, "xgboost": XgboostMeta}


class MetaLearner:
    """A classifier on stacked probabilities that always answers the 27 canonical columns.

    Validation folds can miss a class (small classes): the estimator is fitted on the classes
    present and its columns are put back at their canonical positions (0 for absent classes).
    LinearSVC has no probabilities: the softmax of its margins is used (same argmax).
    """

    def __init__(
        self, kind: str, params: LogregMeta | LinearSvmMeta | XgboostMeta | None = None, seed: int = 0, n_jobs: int = 1
    ):
        if kind not in META_LEARNERS:
            raise ValueError(f"meta-learner {kind!r}, expected one of {META_LEARNERS}")
        params = META_PARAMS[kind]() if params is None else params
        if not isinstance(params, META_PARAMS[kind]):
            raise ValueError(f"meta-learner {kind}: params {params!r}, expected a {META_PARAMS[kind].__name__}")
        self.kind, self.params, self.seed, self.n_jobs = kind, params, seed, n_jobs

    def _estimator(self):
        p = self.params
        if self.kind == "logreg":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=self.seed)
        if self.kind == "linear_svm":
            from sklearn.svm import LinearSVC

            return LinearSVC(C=p.C, max_iter=5000, random_state=self.seed)
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=p.n_estimators,
            max_depth=p.max_depth,
            learning_rate=p.learning_rate,
            subsample=p.subsample,
            tree_method="hist",
            random_state=self.seed,
            n_jobs=self.n_jobs,
            verbosity=0,
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> "MetaLearner":
        self.classes_ = np.unique(np.asarray(y, dtype=np.int64))
        self.estimator_ = None
        if len(self.classes_) > 1:  # a single class needs no model: it is always the answer
            self.estimator_ = self._estimator().fit(x, np.searchsorted(self.classes_, y))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), N_CLASSES))
        if self.estimator_ is None:
            out[:, self.classes_[0]] = 1.0
            return out
        if self.kind == "linear_svm":
            margins = self.estimator_.decision_function(x)
            if margins.ndim == 1:  # two classes: one margin for the second class
                margins = np.column_stack([-margins, margins])
            p = _softmax(margins)
        else:
            p = self.estimator_.predict_proba(x)
        out[:, self.classes_] = p
        return normalise_rows(out)


class Stacking:
    """Meta-learner on the concatenated probabilities of all models (the study's StackingClassifier)."""

    def __init__(self, meta: MetaLearner):
        self.meta = meta

    def _features(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        return np.hstack(_check_inputs(probs))

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "Stacking":
        self.meta.fit(self._features(probs), y)
        return self

    def predict_proba(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        return self.meta.predict_proba(self._features(probs))


class VotingStacking(Stacking):
    """Meta-learner on the soft vote *and* the raw probabilities (the study's voting + stacking)."""

    def __init__(self, vote: SoftVote, meta: MetaLearner):
        super().__init__(meta)
        self.vote = vote

    def _features(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        mats = _check_inputs(probs)
        return np.hstack([self.vote.predict_proba(mats), *mats])


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FusionConfig:
    """``fusion``: late fusion of the models' probabilities; every strategy is fitted on val only."""

    models: tuple[str, ...] = knob(
        ("tfidf_svm", "fasttext", "camembert", "resnet50", "joint"),
        "which reports/probs/<name>.parquet to fuse (any subset of the registered models)",
        nonempty=True,
    )
    strategy: str = knob(
        "auto",
        "auto = best out-of-fold val weighted F1; or force one of " + ", ".join(STRATEGIES),
        choices=("auto", *STRATEGIES),
    )
    weights: dict[str, float] = knob(
        {"tfidf_svm": 0.15, "fasttext": 0.15, "camembert": 0.15, "resnet50": 0.25, "joint": 0.3},
        "soft_vote weights per model (renormalised over fusion.models); study: 0.6 "
        "text / 0.4 image; joint (both at once) gets the largest single share",
        lo=0.0,
    )
    weight_step: float = knob(
        0.1,
        "soft_vote_fit: simplex grid step of the weights searched on val (must divide 1)",
        lo=0.0,
        hi=1.0,
        lo_open=True,
    )
    voting_stacking_meta: str = knob(
        "xgboost", "meta-learner of voting_stacking: logreg, linear_svm or xgboost", choices=META_LEARNERS
    )
    cv_folds: int = knob(5, "out-of-fold val score of each strategy (duplicate groups kept in one fold)", lo=2)
    seed: int = knob(42, "seed of the CV folds and the meta-learners", lo=0)
    n_jobs: int = knob(
        1,
        "XGBoost threads; keep 1: with more the result depends on the thread count, and "
        "OpenMP spin-waits made 2 threads 14x slower on a shared 2-core box",
        lo=1,
    )
    logreg: LogregMeta = knob(LogregMeta(), "stacking_logreg meta-learner")
    linear_svm: LinearSvmMeta = knob(LinearSvmMeta(), "stacking_linear_svm meta-learner")
    xgboost: XgboostMeta = knob(XgboostMeta(), "stacking_xgboost meta-learner (the study's best)")

    @property
    def model_weights(self) -> list[float]:
        """The soft-vote weights of :attr:`models`, in their order."""
        return [self.weights[m] for m in self.models]

    def validate(self, key: str) -> None:
        known = registry.MODELS
        if len(set(self.models)) != len(self.models) or any(m not in known for m in self.models):
            raise invalid(
                f"{key}.models", list(self.models), f"a non-empty list of distinct names from {', '.join(known)}"
            )
        missing = [m for m in self.models if m not in self.weights]
        if missing:
            raise ConfigError(f"missing key {key}.weights.{missing[0]} (a weight for each of {key}.models)")
        if sum(self.model_weights) <= 0:
            raise ConfigError(
                f"{key}.weights of the models in {key}.models sum to 0; expected at least one positive weight"
            )
        if abs(round(1 / self.weight_step) * self.weight_step - 1) > 1e-9:
            raise invalid(f"{key}.weight_step", self.weight_step, "a step that divides 1 (0.1, 0.05)")


def strategy_factories(cfg: FusionConfig) -> dict[str, Callable[[], object]]:
    """A fresh, unfitted instance of every strategy (each CV fold gets its own)."""

    def meta(kind: str) -> MetaLearner:
        return MetaLearner(kind, getattr(cfg, kind), cfg.seed, cfg.n_jobs)

    factories: dict[str, Callable[[], object]] = {
        "max_rule": MaxRule,
        "soft_vote": lambda: SoftVote(cfg.model_weights),
        "soft_vote_fit": lambda: FittedSoftVote(cfg.weight_step),
    }
    for kind in META_LEARNERS:
        factories[f"stacking_{kind}"] = lambda k=kind: Stacking(meta(k))
    factories["voting_stacking"] = lambda: VotingStacking(SoftVote(cfg.model_weights), meta(cfg.voting_stacking_meta))
    return factories


# --------------------------------------------------------------------------- fitting on validation only


def cv_splits(
    y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold on validation rows; duplicate groups never straddle folds when ``groups`` is given.

    Classes with fewer validation rows than folds are allowed (their rows land in some folds
    only; the meta-learner of the other folds simply never predicts them).
    """
    counts = np.bincount(y, minlength=N_CLASSES)
    small = int(((counts > 0) & (counts < n_splits)).sum())
    if small:
        log.info("%d classes have fewer than %d validation rows; CV folds may miss them", small, n_splits)
    splitter = (
        StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        if groups is not None
        else StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        try:
            return list(splitter.split(np.zeros(len(y)), y, groups))
        except ValueError as exc:
            raise PipelineError(
                f"fusion.cv_folds = {n_splits}: cannot split {len(y)} validation rows ({exc}); lower fusion.cv_folds"
            ) from None


def cross_val_proba(
    factory: Callable[[], object],
    probs: Sequence[np.ndarray],
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Out-of-fold probabilities: each fold predicted by a strategy fitted on the other folds."""
    out = np.zeros((len(y), N_CLASSES))
    for train_idx, held_idx in splits:
        strategy = factory().fit([p[train_idx] for p in probs], y[train_idx])
        out[held_idx] = strategy.predict_proba([p[held_idx] for p in probs])
    return out


@dataclass
class FittedFusion:
    """Every strategy fitted on all validation rows, with its out-of-fold validation probabilities."""

    strategies: dict[str, object]
    oof: dict[str, np.ndarray]
    val_scores: dict[str, dict[str, float]]


def fit_fusion(
    val_probs: Sequence[np.ndarray], val_y: np.ndarray, cfg: FusionConfig, groups: np.ndarray | None = None
) -> FittedFusion:
    """Fit every strategy on validation rows only and score each out-of-fold on them.

    This is the only place a fusion sees labels, and its signature admits validation rows only.
    """
    probs = _check_inputs(val_probs)
    y = np.asarray(val_y, dtype=np.int64)
    splits = cv_splits(y, groups, cfg.cv_folds, cfg.seed)
    strategies, oof, val_scores = {}, {}, {}
    for name, factory in strategy_factories(cfg).items():
        oof[name] = cross_val_proba(factory, probs, y, splits)
        val_scores[name] = scores(y, oof[name].argmax(axis=1))
        strategies[name] = factory().fit(probs, y)
        log.info("fusion %-20s val CV weighted F1 %.4f", name, val_scores[name]["weighted_f1"])
    return FittedFusion(strategies, oof, val_scores)


def choose_strategy(val_scores: dict[str, dict[str, float]], forced: str = "auto") -> str:
    """The strategy with the best out-of-fold validation weighted F1 (ties: the simpler, earlier one)."""
    if forced != "auto":
        return forced
    return max(STRATEGIES, key=lambda s: (val_scores[s]["weighted_f1"], -STRATEGIES.index(s)))


# --------------------------------------------------------------------------- the fused model

#: the inputs a model of each modality reads (registry.MODALITIES); it is available when it has any of them
MODALITY_INPUTS = {"text": ("text",), "image": ("image",), "multimodal": ("text", "image")}


def modality_inputs(modality: str) -> tuple[str, ...]:
    """``text`` / ``image`` inputs of a modality; an unknown one is a one-line error."""
    try:
        return MODALITY_INPUTS[modality]
    except KeyError:
        raise PipelineError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITY_INPUTS)}") from None


def availability(modalities: Sequence[str], text_ok: np.ndarray, image_ok: np.ndarray) -> np.ndarray:
    """(n, m) bool: whether each model's input is present per row (text models need text, image models an
    image, a multimodal model either: it zeroes the missing one itself)."""
    ok = {"text": np.asarray(text_ok, dtype=bool), "image": np.asarray(image_ok, dtype=bool)}
    cols = [np.logical_or.reduce([ok[i] for i in modality_inputs(mod)]) for mod in modalities]
    return np.column_stack(cols) if cols else np.ones((len(ok["text"]), 0), dtype=bool)


@dataclass
class FusedModel:
    """The chosen strategy, fitted on validation rows, plus the fallback for rows missing an input.

    A row whose text is empty or whose image is missing is fused from the models that have their
    input: a soft vote with the validation-fitted weights renormalised over those models (equal
    weights if they all had weight 0). A row missing every input uses all models as they are.
    """

    strategy: str
    models: list[str]
    modalities: list[str]
    combiner: object
    fallback_weights: np.ndarray

    def predict_proba(self, probs: Sequence[np.ndarray], available: np.ndarray | None = None) -> np.ndarray:
        mats = _check_inputs(probs)
        if len(mats) != len(self.models):
            raise ValueError(
                f"fused model expects {len(self.models)} matrices ({', '.join(self.models)}), got {len(mats)}"
            )
        out = np.asarray(self.combiner.predict_proba(mats), dtype=np.float64)
        if available is None:
            return out
        available = np.asarray(available, dtype=bool)
        partial = ~available.all(axis=1) & available.any(axis=1)
        for pattern in np.unique(available[partial], axis=0):
            rows = partial & (available == pattern).all(axis=1)
            w = self.fallback_weights * pattern
            w = w / w.sum() if w.sum() > 0 else pattern / pattern.sum()
            out[rows] = np.tensordot(w, np.stack([m[rows] for m in mats]), axes=1)
        return out

    def inputs_used(self, text_ok: np.ndarray, image_ok: np.ndarray) -> list[str]:
        """Per row, which modalities the prediction came from, and why one is missing."""
        has = {i for mod in self.modalities for i in modality_inputs(mod)}
        out = []
        for t, i in zip(np.asarray(text_ok, dtype=bool), np.asarray(image_ok, dtype=bool)):
            used = [m for m, ok in (("text", t), ("image", i)) if m in has and ok]
            missing = [
                why for m, ok, why in (("text", t, "text empty"), ("image", i, "image missing")) if m in has and not ok
            ]
            if not used:
                out.append("none (" + ", ".join(missing) + "): all models on blank input")
            elif missing:
                out.append(f"{'+'.join(used)} only ({', '.join(missing)})")
            else:
                out.append("+".join(used))
        return out

    def summary(self) -> dict:
        weights = getattr(self.combiner, "weights_", None)
        return {
            "strategy": self.strategy,
            "models": self.models,
            "modalities": self.modalities,
            "weights": None if weights is None else dict(zip(self.models, map(float, weights))),
            "fallback_weights": dict(zip(self.models, map(float, self.fallback_weights))),
        }


def save(model: FusedModel, out_dir: str | Path) -> None:
    """Write ``fusion.joblib`` (the fitted object) and ``fusion.json`` (readable summary) atomically."""
    import json

    with atomic_path(out_dir, is_dir=True) as tmp:
        joblib.dump(model, tmp / MODEL_FILE)
        (tmp / SUMMARY_FILE).write_text(json.dumps(model.summary(), indent=2) + "\n", encoding="utf-8")


def load(model_dir: str | Path) -> FusedModel:
    """Load a fused model saved by :func:`save`; a missing one names the stage that makes it."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise PipelineError(f"{path}: fused model not found; run `dvc repro fusion`")
    return joblib.load(path)


# --------------------------------------------------------------------------- contract tables


def align_tables(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Rows common to every model table (same row ids, splits and labels) and one matrix per model.

    The tables come from one split, so any difference is a stale stage: one line names it.
    """
    names = list(tables)
    ref_name = names[0]
    ref = tables[ref_name].sort_values("row_id").reset_index(drop=True)
    rows = ref[["row_id", "split", "prdtypecode"]]
    mats = []
    for name in names:
        t = tables[name].sort_values("row_id").reset_index(drop=True)
        if len(t) != len(ref) or not np.array_equal(t["row_id"].to_numpy(), ref["row_id"].to_numpy()):
            missing = np.setdiff1d(ref["row_id"].to_numpy(), t["row_id"].to_numpy())
            extra = np.setdiff1d(t["row_id"].to_numpy(), ref["row_id"].to_numpy())
            what = (
                f"row_id {missing[0]} missing (present in {ref_name})"
                if len(missing)
                else f"row_id {extra[0] if len(extra) else '?'} not in {ref_name}"
            )
            raise PipelineError(
                f"reports/probs/{name}.parquet: {what}; expected the same rows in every model table "
                f"(rerun `dvc repro {name}`)"
            )
        if not np.array_equal(t["split"].astype(str).to_numpy(), ref["split"].astype(str).to_numpy()):
            raise PipelineError(
                f"reports/probs/{name}.parquet: split column differs from {ref_name}; rerun `dvc repro {name}`"
            )
        mats.append(t[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64))
    return rows, mats


@dataclass
class FusionResult:
    model: FusedModel
    comparison: pd.DataFrame  # one row per strategy: val CV and test scores, chosen flag
    table: pd.DataFrame  # the chosen fusion in the probability-table contract
    predictions: pd.DataFrame  # row_id, split, prdtypecode, strategy, predicted (val out-of-fold + test)


def fuse_tables(
    tables: dict[str, pd.DataFrame],
    modalities: Sequence[str],
    cfg: FusionConfig,
    groups: pd.Series | None = None,
    text_ok: pd.Series | None = None,
    image_ok: pd.Series | None = None,
) -> FusionResult:
    """Fit on validation rows, choose on out-of-fold validation weighted F1, report on test.

    ``groups``/``text_ok``/``image_ok`` are Series indexed by row_id (optional). Validation rows
    in the output carry their out-of-fold probabilities, so their score stays honest.
    """
    from rakuten.contracts.model_files import proba_frame

    rows, mats = align_tables(tables)
    split = rows["split"].astype(str).to_numpy()
    val = split == "val"
    if not val.any():
        raise PipelineError("reports/probs: no validation rows; fusion is fitted on split == val")
    y_val = codes_to_indices(rows.loc[val, "prdtypecode"].to_numpy(dtype=np.int64))
    g_val = None if groups is None else groups.reindex(rows.loc[val, "row_id"]).to_numpy()
    if g_val is not None and pd.isna(g_val).any():
        g_val = None
        log.warning("group ids missing for some validation rows; CV folds ignore duplicate groups")
    fitted = fit_fusion([m[val] for m in mats], y_val, cfg, g_val)  # validation rows only
    chosen = choose_strategy(fitted.val_scores, cfg.strategy)
    fallback = fitted.strategies["soft_vote_fit"].weights_
    model = FusedModel(chosen, list(cfg.models), list(modalities), fitted.strategies[chosen], fallback)

    test = split == "test"
    y_test = rows.loc[test, "prdtypecode"].to_numpy(dtype=np.int64) if test.any() else None
    records, preds = [], []
    for name in STRATEGIES:
        rec = {
            "strategy": name,
            "chosen": name == chosen,
            **{f"val_cv_{k}": v for k, v in fitted.val_scores[name].items()},
        }
        val_pred = indices_to_codes(fitted.oof[name].argmax(axis=1))
        preds.append(
            pd.DataFrame(
                {
                    "row_id": rows.loc[val, "row_id"].to_numpy(),
                    "split": "val",
                    "prdtypecode": rows.loc[val, "prdtypecode"].to_numpy(),
                    "strategy": name,
                    "predicted": val_pred,
                }
            )
        )
        if test.any():
            test_pred = indices_to_codes(fitted.strategies[name].predict_proba([m[test] for m in mats]).argmax(1))
            rec.update({f"test_{k}": v for k, v in scores(y_test, test_pred).items()})
            preds.append(
                pd.DataFrame(
                    {
                        "row_id": rows.loc[test, "row_id"].to_numpy(),
                        "split": "test",
                        "prdtypecode": rows.loc[test, "prdtypecode"].to_numpy(),
                        "strategy": name,
                        "predicted": test_pred,
                    }
                )
            )
        records.append(rec)

    avail = None
    if text_ok is not None or image_ok is not None:
        ids = rows["row_id"]
        t_ok = np.ones(len(rows), bool) if text_ok is None else text_ok.reindex(ids).fillna(True).to_numpy(bool)
        i_ok = np.ones(len(rows), bool) if image_ok is None else image_ok.reindex(ids).fillna(True).to_numpy(bool)
        avail = availability(modalities, t_ok, i_ok)
        log.info(
            "fusion: %d rows fused from a subset of models (missing text or image)", int((~avail.all(axis=1)).sum())
        )
    fused = model.predict_proba(mats, avail)
    fused[val] = (
        fitted.oof[chosen]
        if avail is None
        else _oof_with_fallback(model, fitted.oof[chosen], [m[val] for m in mats], avail[val])
    )
    predictions = pd.concat(preds, ignore_index=True)
    predictions["prdtypecode"] = pd.array(predictions["prdtypecode"], dtype="Int64")
    return FusionResult(
        model, pd.DataFrame.from_records(records), proba_frame(rows, normalise_rows(fused)), predictions
    )


def _oof_with_fallback(model: FusedModel, oof: np.ndarray, mats: list[np.ndarray], avail: np.ndarray) -> np.ndarray:
    """Out-of-fold combiner output, with the missing-input fallback applied to the rows that need it."""
    out = oof.copy()
    partial = ~avail.all(axis=1)
    if partial.any():
        out[partial] = model.predict_proba([m[partial] for m in mats], avail[partial])
    return out

"""The stacking meta-learners (logistic regression, linear SVM, XGBoost) and their ``fusion.<kind>`` knobs.

A meta-learner is fitted on stacked probabilities of validation rows only; it always answers the 27
canonical columns, even when a cross-validation fold misses a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rakuten.contracts.classes import N_CLASSES
from rakuten.core.config import knob
from rakuten.fusion.probs import normalise_rows, softmax

META_LEARNERS = ("logreg", "linear_svm", "xgboost")


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
            p = softmax(margins)
        else:
            p = self.estimator_.predict_proba(x)
        out[:, self.classes_] = p
        return normalise_rows(out)

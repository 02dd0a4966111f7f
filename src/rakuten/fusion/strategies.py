"""The fusion strategies (the study's section VI) and their shared protocol.

Every strategy works on a *list* of ``(n, 27)`` probability matrices, one per model, rows aligned:
``fit(probs, y)`` (``y`` = class indices in canonical order) and ``predict_proba(probs) -> (n, 27)``.

- ``max_rule``: per class, the highest probability any model gives (argmax = most confident model).
- ``soft_vote`` / ``soft_vote_fit``: weighted mean (:mod:`rakuten.fusion.weights`).
- ``stacking_<meta>``: a meta-learner (:mod:`rakuten.fusion.meta`) on the concatenated probabilities
  (study's best: XGBoost, 0.9002).
- ``voting_stacking``: the meta-learner on the soft vote plus the raw probabilities (study: below
  plain stacking).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rakuten.fusion.meta import META_LEARNERS, MetaLearner
from rakuten.fusion.probs import check_inputs, normalise_rows
from rakuten.fusion.weights import SoftVote

STRATEGIES = (
    "max_rule",
    "soft_vote",
    "soft_vote_fit",
    *(f"stacking_{kind}" for kind in META_LEARNERS),
    "voting_stacking",
)


class MaxRule:
    """Per class, the highest probability across models (renormalised): the most confident model wins."""

    def fit(self, probs: Sequence[np.ndarray], y: np.ndarray) -> "MaxRule":
        return self

    def predict_proba(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        return normalise_rows(np.max(np.stack(check_inputs(probs)), axis=0))


class Stacking:
    """Meta-learner on the concatenated probabilities of all models (the study's StackingClassifier)."""

    def __init__(self, meta: MetaLearner):
        self.meta = meta

    def _features(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        return np.hstack(check_inputs(probs))

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
        mats = check_inputs(probs)
        return np.hstack([self.vote.predict_proba(mats), *mats])

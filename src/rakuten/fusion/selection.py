"""Fitting every strategy on validation rows only and choosing one on its out-of-fold validation score.

No leakage, by construction: :func:`fit_fusion` receives validation rows only; each strategy's own
validation score is out-of-fold (group-aware stratified K-fold on validation), the strategy is
chosen on that score, and test rows only ever pass through ``predict_proba`` to be reported.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from rakuten.contracts.classes import N_CLASSES
from rakuten.contracts.metrics import scores
from rakuten.core.errors import PipelineError
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.meta import META_LEARNERS, MetaLearner
from rakuten.fusion.probs import check_inputs
from rakuten.fusion.strategies import STRATEGIES, MaxRule, Stacking, VotingStacking
from rakuten.fusion.weights import FittedSoftVote, SoftVote

log = logging.getLogger(__name__)


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
    probs = check_inputs(val_probs)
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

"""Fitting every strategy on validation rows only and choosing one on its out-of-fold validation score.

No leakage, by construction: :func:`fit_fusion` receives validation rows only; each strategy's own
validation score is out-of-fold (group-aware stratified K-fold on validation), the strategy is
chosen on that score, and test rows only ever pass through ``predict_proba`` to be reported.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from rakuten.contracts.classes import N_CLASSES
from rakuten.contracts.metrics import scores
from rakuten.core.errors import PipelineError
from rakuten.core.parallel import process_pool, worker_count
from rakuten.fusion import persistence  # noqa: F401 (a worker then resolves the names fusion classes pickle by)
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
    for k, (_, held_idx) in enumerate(splits):
        out[held_idx] = _fit_part(factory, probs, y, splits, k)
    return out


def _fit_part(
    factory: Callable[[], object],
    probs: Sequence[np.ndarray],
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    k: int,
) -> Any:
    """Fit ``k``: for a fold (``k < len(splits)``) the probabilities of its held-out rows from a strategy
    fitted on the other folds; for ``k == len(splits)`` the strategy fitted on every row."""
    if k == len(splits):
        return factory().fit(list(probs), y)
    train_idx, held_idx = splits[k]
    strategy = factory().fit([p[train_idx] for p in probs], y[train_idx])
    return strategy.predict_proba([p[held_idx] for p in probs])


@dataclass
class FittedFusion:
    """Every strategy fitted on all validation rows, with its out-of-fold validation probabilities."""

    strategies: dict[str, object]
    oof: dict[str, np.ndarray]
    val_scores: dict[str, dict[str, float]]


#: below this many validation rows the fits run in-process: a worker's start (~2 s: a fresh interpreter
#: importing scikit-learn and XGBoost) costs more than the fits it would share
POOL_MIN_ROWS = 2000
#: what a worker process fits from: (config, validation probabilities, labels, CV folds), set once per worker.
#: Its own initializer rather than core.parallel's ``state``: unpickling the initializer imports this module
#: (and so fusion.persistence, which gives the fusion classes the names they pickle by) before the state.
_WORKER_STATE: tuple | None = None


def _set_worker_state(state: tuple) -> None:
    global _WORKER_STATE
    _WORKER_STATE = state


def _worker_fit(task: tuple[str, int]) -> Any:
    cfg, probs, y, splits = _WORKER_STATE
    name, k = task
    return _fit_part(strategy_factories(cfg)[name], probs, y, splits, k)


def _fit_all(
    cfg: FusionConfig,
    probs: list[np.ndarray],
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    min_pool_rows: int,
) -> dict[tuple[str, int], Any]:
    """Every fit of :func:`fit_fusion` by ``(strategy, k)`` (:func:`_fit_part`), in ``cfg.workers`` processes.

    Why processes and not XGBoost threads: a fit is single-threaded and independent of the others, so
    spreading the 7 x (folds + 1) fits over cores returns the same objects in the same slots whatever the
    count, while XGBoost's own threads change its sums with their number (``fusion.n_jobs``). Spawned, not
    forked: a fork of a process whose OpenMP pool has run (XGBoost, earlier in the same interpreter) hangs.
    The costliest strategies (the XGBoost meta-learners, last in the list) are submitted first."""
    factories = strategy_factories(cfg)
    tasks = [(name, k) for name in reversed(list(factories)) for k in range(len(splits) + 1)]
    workers = min(worker_count(cfg.workers), len(tasks))
    if workers <= 1 or len(y) < min_pool_rows:
        return {(name, k): _fit_part(factories[name], probs, y, splits, k) for name, k in tasks}
    log.info("fusion: %d fits in %d processes", len(tasks), workers)
    init = functools.partial(_set_worker_state, (cfg, probs, y, splits))
    with process_pool(workers, initializer=init, spawn=True) as pool:
        return dict(zip(tasks, pool.map(_worker_fit, tasks)))


def fit_fusion(
    val_probs: Sequence[np.ndarray],
    val_y: np.ndarray,
    cfg: FusionConfig,
    groups: np.ndarray | None = None,
    min_pool_rows: int = POOL_MIN_ROWS,
) -> FittedFusion:
    """Fit every strategy on validation rows only and score each out-of-fold on them.

    This is the only place a fusion sees labels, and its signature admits validation rows only.
    ``min_pool_rows``: the fits share ``cfg.workers`` processes from this many validation rows on.
    """
    probs = check_inputs(val_probs)
    y = np.asarray(val_y, dtype=np.int64)
    splits = cv_splits(y, groups, cfg.cv_folds, cfg.seed)
    fits = _fit_all(cfg, probs, y, splits, min_pool_rows)
    strategies, oof, val_scores = {}, {}, {}
    for name in strategy_factories(cfg):
        oof[name] = np.zeros((len(y), N_CLASSES))
        for k, (_, held_idx) in enumerate(splits):
            oof[name][held_idx] = fits[name, k]
        val_scores[name] = scores(y, oof[name].argmax(axis=1))
        strategies[name] = fits[name, len(splits)]
        log.info("fusion %-20s val CV weighted F1 %.4f", name, val_scores[name]["weighted_f1"])
    return FittedFusion(strategies, oof, val_scores)


def choose_strategy(val_scores: dict[str, dict[str, float]], forced: str = "auto") -> str:
    """The strategy with the best out-of-fold validation weighted F1 (ties: the simpler, earlier one)."""
    if forced != "auto":
        return forced
    return max(STRATEGIES, key=lambda s: (val_scores[s]["weighted_f1"], -STRATEGIES.index(s)))

"""Out-of-fold probabilities of the train rows, and their pooling over models.

Why cross-fitting: a model scores its own training rows with the labels it learnt, wrong ones included
(fastText at 100 epochs recites them), so a flag needs a probability from models that never saw the row.
The train rows are cut into K folds that keep each duplicate group (``group_id`` of split.parquet) whole,
so a copy of a row never trains the model that predicts it; each fold is predicted by models fitted on
the other K-1. The held-out rows reach the models without their label column.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Callable, Mapping

import joblib
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from rakuten.contracts.classes import N_CLASSES
from rakuten.contracts.model_files import check_proba
from rakuten.core.errors import PipelineError
from rakuten.core.parallel import process_pool, worker_state

log = logging.getLogger(__name__)

LABEL = "prdtypecode"
GROUP = "group_id"
#: floor under each probability before the geometric pooling: one model's zero must not veto a class alone
FLOOR = 1e-3
#: ``fit(train rows with labels, held-out rows without) -> (n_held, 27) probabilities``
Fitter = Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]
#: below this many rows the folds run in-process: a spawned worker's start (~3 s: a fresh interpreter
#: importing the models' libraries, and the frame shipped to it) costs more than it saves
POOL_MIN_ROWS = 2000


def assign_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index of each row: stratified by label, a group never split, seeded."""
    n_groups = len(np.unique(groups))
    if folds > n_groups:
        raise PipelineError(
            f"label_audit.folds = {folds}, expected at most the {n_groups} duplicate groups of the train rows"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold = np.full(len(labels), -1, dtype=np.int64)
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": expected
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            fold[held] = k
    return fold


def out_of_fold(
    frame: pd.DataFrame,
    fitters: Mapping[str, Fitter],
    folds: int,
    seed: int,
    n_jobs: int = 1,
    min_pool_rows: int = POOL_MIN_ROWS,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({model: (n, 27) out-of-fold probabilities}, fold of each row)`` for the rows of ``frame``.

    With ``n_jobs`` > 1 (and at least ``min_pool_rows`` rows) the folds are fitted side by side in spawned
    processes (``fitters`` must then pickle): each fold's fits see the same rows in the same order as in one
    process, so the probabilities are the same bits whatever the count."""
    for column in (LABEL, GROUP):
        if column not in frame.columns:
            raise PipelineError(f"audit frame: missing column {column}; expected the train rows of split.parquet")
    fold = assign_folds(frame[LABEL].to_numpy(), frame[GROUP].to_numpy(), folds, seed)
    ks = [k for k in range(folds) if (fold == k).any()]
    workers = min(n_jobs, len(ks))
    progress = dict(total=len(ks), desc="label_audit folds", unit="fold")
    if workers <= 1 or len(frame) < min_pool_rows:
        done = tqdm((fit_fold(frame, fold, fitters, k) for k in ks), **progress)
        results = list(done)
    else:
        with process_pool(workers, spawn=True, state=(frame, fold, fitters)) as pool:
            results = list(tqdm(pool.map(_worker_fold, ks), **progress))
    probs = {name: np.zeros((len(frame), N_CLASSES)) for name in fitters}
    for k, (fold_probs, spent) in zip(ks, results):
        held = fold == k
        for name, p in fold_probs.items():
            probs[name][held] = p
        log.info("fold %d/%d: %d rows fitted, %d predicted; seconds %s", k + 1, folds, (~held).sum(), held.sum(), spent)
    return probs, fold


def fit_fold(
    frame: pd.DataFrame, fold: np.ndarray, fitters: Mapping[str, Fitter], k: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fold ``k``: each model fitted on the other folds predicts its rows, given without their label;
    ``({model: probabilities}, {model: seconds})``."""
    held = fold == k
    train = frame[~held].reset_index(drop=True)
    blind = frame[held].drop(columns=[LABEL]).reset_index(drop=True)  # no label reaches a prediction
    out, spent = {}, {}
    for name, fit in fitters.items():
        start = time.perf_counter()
        out[name] = check_proba(fit(train, blind), f"{name}, fold {k}")
        spent[name] = round(time.perf_counter() - start, 1)
    return out, spent


def _worker_fold(k: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fold ``k`` in a pool worker, with joblib sequential (the pool is the parallelism): a model's own joblib
    processes (tfidf_svm's calibration folds) would outlive the fit as loky's idle workers, and a pool worker
    cannot exit before its children, so the pool's shutdown waited out loky's 300 s idle timeout (measured
    at full size); joblib threads would share liblinear's C random state and change the bits (measured)."""
    frame, fold, fitters = worker_state()  # sent once per worker by out_of_fold
    with joblib.parallel_config(backend="sequential"):
        return fit_fold(frame, fold, fitters, k)


def pool(probs: Mapping[str, np.ndarray], how: str, views: Mapping[str, str] | None = None) -> np.ndarray:
    """The models' probabilities pooled: ``mean`` (arithmetic over the models) or ``geometric``: the arithmetic
    mean within each view (``views``: model -> text / image; each model its own view when absent), then the
    normalised geometric mean of the floored view probabilities across views, so a class keeps weight only
    where every view gives it some (two text models are two readings of one view, not two votes). A row
    whose text points to a neighbour class but whose photo shows its label is then not flagged."""
    if how == "mean":
        return np.mean(np.stack(list(probs.values())), axis=0)
    if how != "geometric":
        raise ValueError(f"unknown pooling {how!r}")
    by_view: dict[str, list[np.ndarray]] = {}
    for name, p in probs.items():
        by_view.setdefault((views or {}).get(name, name), []).append(p)
    logs = np.mean([np.log(np.mean(ps, axis=0) + FLOOR) for ps in by_view.values()], axis=0)
    pooled = np.exp(logs - logs.max(axis=1, keepdims=True))
    return pooled / pooled.sum(axis=1, keepdims=True)

"""Fusion building blocks pinned on hand-made cases (docs/mutation.md).

Expected values are computed by hand in the comments or with an independent scikit-learn call.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, PROBA_COLUMNS, codes_to_indices
from rakuten.contracts.metrics import scores
from rakuten.core.config import ConfigError
from rakuten.core.errors import PipelineError
from rakuten.fusion import fusion, persistence, selection
from rakuten.fusion.meta import META_LEARNERS, LinearSvmMeta, LogregMeta, MetaLearner, XgboostMeta
from rakuten.fusion.model import FusedModel, availability
from rakuten.fusion.probs import check_inputs, normalise_rows, softmax
from rakuten.fusion.strategies import STRATEGIES, MaxRule, Stacking, VotingStacking
from rakuten.fusion.weights import FittedSoftVote, SoftVote, simplex_grid, weighted_f1
from tests.helpers.fusion_fakes import ALL, FIRST_HALF, SECOND_HALF, make_tables, model_proba, small_config

K = N_CLASSES


def onehot(idx, n_classes: int = K, hot: float = 1.0) -> np.ndarray:
    idx = np.asarray(idx)
    out = np.full((len(idx), n_classes), (1.0 - hot) / (n_classes - 1))
    out[np.arange(len(idx)), idx] = hot
    return out


# --------------------------------------------------------------------------- helpers


def test_check_inputs_rejects_empty_and_wrong_shapes():
    with pytest.raises(ValueError, match=r"^fusion needs at least one probability matrix$"):
        check_inputs([])
    good = onehot([0, 1, 2])
    with pytest.raises(ValueError, match=r"^probability matrix 1: expected shape \(3, 27\), got \(3, 5\)$"):
        check_inputs([good, np.ones((3, 5))])
    with pytest.raises(ValueError, match=r"^probability matrix 1: expected shape \(3, 27\), got \(2, 27\)$"):
        check_inputs([good, good[:2]])
    with pytest.raises(ValueError, match=r"^probability matrix 0: expected shape \(27, 27\), got \(27,\)$"):
        check_inputs([np.ones(27)])
    mats = check_inputs([[[1] * K, [2] * K]])  # ints and lists come back as float64 arrays
    assert mats[0].dtype == np.float64 and mats[0].shape == (2, K)


def test_normalise_rows_scales_and_makes_zero_rows_uniform():
    m = np.zeros((2, K))
    m[0, :3] = [1.0, 2.0, 1.0]
    out = normalise_rows(m)
    assert out[0, :3].tolist() == [0.25, 0.5, 0.25] and out[0, 3:].sum() == 0
    assert np.allclose(out[1], 1 / K)
    wide = normalise_rows(np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 5.0]]))  # 4 columns
    assert wide.tolist() == [[0.25] * 4, [0.125, 0.125, 0.125, 0.625]]


def test_softmax_is_stable_for_large_margins():
    z = np.array([[1000.0, 1000.0 + np.log(3.0)], [-1000.0, -1000.0], [0.0, np.log(4.0)]])
    out = softmax(z)
    assert np.allclose(out, [[0.25, 0.75], [0.5, 0.5], [0.2, 0.8]])
    assert np.isfinite(out).all()


def test_weighted_f1_on_a_hand_case_with_unequal_classes():
    # y: class 0 x5, class 1 x2, class 2 x1; argmax: 0 0 0 0 1 | 1 0 | 1
    # F1: class 0 = 0.8, class 1 = 0.4, class 2 = 0 -> weighted (5*0.8 + 2*0.4)/8 = 0.6 (macro would be 0.4)
    y = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    proba = onehot([0, 0, 0, 0, 1, 1, 0, 1], hot=0.9)
    assert weighted_f1(y, proba) == pytest.approx(0.6, abs=1e-12)
    assert weighted_f1(y, proba) == pytest.approx(f1_score(y, proba.argmax(1), average="weighted"))
    assert weighted_f1(np.array([3, 3]), onehot([3, 3])) == 1.0


def test_simplex_grid_rows_and_order():
    assert simplex_grid(2, 0.5).tolist() == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert simplex_grid(2, 1.0).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    grid = simplex_grid(3, 0.25)
    assert len(grid) == 15 and np.allclose(grid.sum(1), 1)  # C(4 + 2, 2) = 15 compositions of 4 into 3 parts
    assert grid[0].tolist() == [0.0, 0.0, 1.0] and grid[-1].tolist() == [1.0, 0.0, 0.0]
    assert simplex_grid(1, 0.1).tolist() == [[1.0]]
    for bad in (0.3, 2.0, 0.7):
        with pytest.raises(ValueError, match=rf"^weight grid step {bad} must divide 1 \(e\.g\. 0\.1, 0\.05\)$"):
            simplex_grid(2, bad)


# --------------------------------------------------------------------------- strategies


def test_max_rule_is_the_renormalised_per_class_maximum():
    a = np.zeros((1, K))
    b = np.zeros((1, K))
    a[0, :3] = [0.6, 0.4, 0.0]
    b[0, :3] = [0.1, 0.2, 0.7]
    out = MaxRule().fit([a, b], np.array([0])).predict_proba([a, b])
    # max per class: 0.6, 0.4, 0.7 -> / 1.7
    assert np.allclose(out[0, :3], np.array([0.6, 0.4, 0.7]) / 1.7) and out[0, 3:].sum() == 0
    counts = np.zeros((2, K), dtype=np.int64)
    counts[:, 5] = 3
    assert np.allclose(MaxRule().predict_proba([counts])[:, 5], 1.0)  # integer input is normalised too


def test_soft_vote_weights_are_normalised_and_validated():
    vote = SoftVote([1, 3])
    assert vote.weights_.tolist() == [0.25, 0.75]
    assert vote.fit([onehot([0]), onehot([1])], np.array([0])) is vote
    out = vote.predict_proba([onehot([0, 1]), onehot([1, 1])])
    assert np.allclose(out[0, :2], [0.25, 0.75]) and np.allclose(out[1, :2], [0.0, 1.0])
    assert SoftVote([0, 2]).weights_.tolist() == [0.0, 1.0]
    for bad in ([1, -1], [0, 0], [[1, 2]]):
        with pytest.raises(ValueError, match=r"^soft vote weights must be non-negative with a positive sum, got "):
            SoftVote(bad)
    with pytest.raises(ValueError, match=r"^soft vote has 2 weights but got 1 matrices$"):
        vote.predict_proba([onehot([0])])


def test_fitted_soft_vote_breaks_f1_ties_by_log_loss():
    # same argmax everywhere (F1 equal for every weight); model a is more confident on the true class:
    # the lowest log loss is all weight on a
    y = np.arange(6) % K
    a, b = onehot(y, hot=0.9), onehot(y, hot=0.3)
    vote = FittedSoftVote(step=0.25).fit([b, a], y)
    assert vote.weights_.tolist() == [0.0, 1.0]
    vote = FittedSoftVote(step=0.25).fit([a, b], y.astype(np.float64))  # the last grid point; float labels
    assert vote.weights_.tolist() == [1.0, 0.0]
    assert FittedSoftVote().step == 0.1
    assert FittedSoftVote().weights_.shape == (0,)


def _probs(rows):
    """(n, 27) probabilities from {class: probability} per row, the rest spread evenly."""
    out = np.empty((len(rows), K))
    for i, row in enumerate(rows):
        out[i] = (1.0 - sum(row.values())) / (K - len(row))
        for c, p in row.items():
            out[i, c] = p
    return out


def test_fitted_soft_vote_clips_zero_probabilities_in_the_log_loss():
    # same argmax everywhere (equal F1). Model a: right with probability 1 on 19 rows, probability 0 on the
    # true class of row 0; model b: 0.04 on the true class of every row. Mean log loss, clipped at 1e-15:
    # a = log(1e-15) / 20 = -1.73, b = log(0.04) = -3.22 -> a wins (unclipped, a would be -inf)
    y = np.zeros(20, dtype=np.int64)
    a = _probs([{1: 1.0}] + [{0: 1.0}] * 19)
    b = _probs([{1: 0.5, 0: 0.04}] + [{0: 0.04}] * 19)
    assert (a.argmax(1) == b.argmax(1)).all()
    vote = FittedSoftVote(step=1.0).fit([b, a], y)
    assert vote.weights_.tolist() == [0.0, 1.0]


def test_fitted_soft_vote_compares_f1_to_9_places_before_the_log_loss():
    # a: every row right, unsure (0.4) -> F1 1; b: 2 rows of 3 right, sure (0.99), row 2 wrong but close
    # (0.45 on the true class) -> F1 2/3, lower log loss. F1 decides: a.
    y = np.array([0, 1, 2])
    a = _probs([{0: 0.4}, {1: 0.4}, {2: 0.4}])
    b = _probs([{0: 0.99}, {1: 0.99}, {5: 0.5, 2: 0.45}])
    vote = FittedSoftVote(step=1.0).fit([b, a], y)
    assert vote.weights_.tolist() == [0.0, 1.0]


def test_fitted_soft_vote_full_tie_keeps_the_first_grid_point():
    # both models put probability 1 on the same wrong class: F1 and (clipped) log loss tie everywhere
    y = np.array([0, 1, 2])
    wrong = onehot([5, 5, 5])
    vote = FittedSoftVote(step=0.5).fit([wrong, wrong.copy()], y)
    assert vote.weights_.tolist() == [0.0, 1.0]


def test_fitted_soft_vote_prefers_f1_over_log_loss():
    # model a: right on rows 0-2 (hot 0.4); model b: right only on row 0 but very confident there
    y = np.array([0, 1, 2])
    a = onehot([0, 1, 2], hot=0.4)
    b = onehot([0, 5, 5], hot=0.99)
    vote = FittedSoftVote(step=0.5).fit([a, b], y)
    # w = (0, 1): F1 1/3; (0.5, 0.5): rows 1, 2 -> class 5 (0.495 + 0.0115 vs 0.2 + 0.0004): F1 1/3;
    # (1, 0): all right, F1 1 -> chosen despite b's lower loss on row 0
    assert vote.weights_.tolist() == [1.0, 0.0]


def test_meta_learner_rejects_unknown_kind_and_wrong_params():
    with pytest.raises(
        ValueError, match=r"^meta-learner 'tree', expected one of \('logreg', 'linear_svm', 'xgboost'\)$"
    ):
        MetaLearner("tree")
    with pytest.raises(
        ValueError, match=r"^meta-learner logreg: params LinearSvmMeta\(C=1\.0\), expected a LogregMeta$"
    ):
        MetaLearner("logreg", LinearSvmMeta())
    meta = MetaLearner("xgboost")
    assert meta.params == XgboostMeta() and (meta.seed, meta.n_jobs) == (0, 1)


def test_meta_learner_estimators_get_the_configured_parameters():
    lr = MetaLearner("logreg", LogregMeta(C=2.5, max_iter=77), seed=3)._estimator().get_params()
    assert (lr["C"], lr["max_iter"], lr["random_state"]) == (2.5, 77, 3)
    svm = MetaLearner("linear_svm", LinearSvmMeta(C=0.5), seed=4)._estimator().get_params()
    assert (svm["C"], svm["max_iter"], svm["random_state"]) == (0.5, 5000, 4)
    xgb = (
        MetaLearner(
            "xgboost",
            XgboostMeta(n_estimators=7, max_depth=2, learning_rate=0.3, subsample=0.5),
            seed=5,
            n_jobs=1,
        )
        ._estimator()
        .get_params()
    )
    assert {
        k: xgb[k]
        for k in (
            "n_estimators",
            "max_depth",
            "learning_rate",
            "subsample",
            "tree_method",
            "random_state",
            "n_jobs",
            "verbosity",
        )
    } == {
        "n_estimators": 7,
        "max_depth": 2,
        "learning_rate": 0.3,
        "subsample": 0.5,
        "tree_method": "hist",
        "random_state": 5,
        "n_jobs": 1,
        "verbosity": 0,
    }


def test_meta_learner_single_class_and_two_class_svm():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    single = MetaLearner("logreg").fit(x, np.array([7, 7, 7, 7]))
    assert single.estimator_ is None
    p = single.predict_proba(x)
    assert p.shape == (4, K) and (p[:, 7] == 1).all() and p.sum() == 4
    # two classes, separable on x: LinearSVC gives one margin, for the second class
    svm = MetaLearner("linear_svm").fit(x, np.array([2, 2, 9, 9]))
    p = svm.predict_proba(np.array([[-5.0], [8.0]]))
    assert p.argmax(1).tolist() == [2, 9]
    assert np.allclose(p.sum(1), 1) and np.allclose(p[:, [2, 9]].sum(1), 1)
    three = MetaLearner("linear_svm").fit(np.eye(3).repeat(4, axis=0), np.repeat([1, 4, 6], 4))
    assert three.predict_proba(np.eye(3)).argmax(1).tolist() == [1, 4, 6]
    floats = MetaLearner("logreg").fit(np.eye(3).repeat(4, axis=0), np.repeat([1.0, 4.0, 6.0], 4))
    assert floats.classes_.dtype == np.int64
    assert floats.predict_proba(np.eye(3)).argmax(1).tolist() == [1, 4, 6]


def test_meta_learner_default_seed_is_zero():
    rng = np.random.default_rng(1)
    x, y = rng.random((60, 4)), rng.integers(0, 3, 60)
    params = XgboostMeta(n_estimators=5, subsample=0.5)
    default = MetaLearner("xgboost", params).fit(x, y).predict_proba(x)
    seeded = MetaLearner("xgboost", params, seed=0).fit(x, y).predict_proba(x)
    other = MetaLearner("xgboost", params, seed=1).fit(x, y).predict_proba(x)
    assert np.array_equal(default, seeded) and not np.array_equal(default, other)


def test_stacking_features_and_voting_stacking_features():
    a, b = onehot([0, 1]), onehot([2, 3])
    assert np.array_equal(Stacking(MetaLearner("logreg"))._features([a, b]), np.hstack([a, b]))
    vs = VotingStacking(SoftVote([1, 1]), MetaLearner("logreg"))
    feats = vs._features([a, b])
    assert feats.shape == (2, 3 * K)
    assert np.allclose(feats[:, :K], (a + b) / 2) and np.array_equal(feats[:, K:], np.hstack([a, b]))
    y = np.array([0, 1] * 10)
    x = [onehot(y), onehot(y)]
    fitted = Stacking(MetaLearner("logreg")).fit(x, y)
    assert fitted.predict_proba(x).argmax(1).tolist() == y.tolist()


# --------------------------------------------------------------------------- configuration


def test_fusion_config_validation_messages():
    cfg = small_config(["tfidf_svm", "resnet50"])
    assert cfg.model_weights == [1.0, 1.0]
    assert replace(cfg, weights={"tfidf_svm": 0.3, "resnet50": 0.7, "camembert": 9}).model_weights == [0.3, 0.7]
    cfg.validate("fusion")
    with pytest.raises(
        ConfigError,
        match=r"^fusion\.models = \['tfidf_svm', 'tfidf_svm'\], expected a non-empty "
        r"list of distinct names from tfidf_svm, fasttext, camembert, resnet50, "
        r"joint$",
    ):
        replace(cfg, models=("tfidf_svm", "tfidf_svm")).validate("fusion")
    with pytest.raises(ConfigError, match=r"^fusion\.models = \['bert'\], expected"):
        replace(cfg, models=("bert",)).validate("fusion")
    with pytest.raises(
        ConfigError,
        match=r"^missing key fusion\.weights\.resnet50 \(a weight for each of "
        r"fusion\.models\)$",
    ):
        replace(cfg, weights={"tfidf_svm": 1.0}).validate("fusion")
    with pytest.raises(
        ConfigError,
        match=r"^fusion\.weights of the models in fusion\.models sum to 0; expected at "
        r"least one positive weight$",
    ):
        replace(cfg, weights={"tfidf_svm": 0.0, "resnet50": 0.0}).validate("fusion")
    replace(cfg, weights={"tfidf_svm": 0.0, "resnet50": 0.5}).validate("fusion")
    with pytest.raises(
        ConfigError,
        match=r"^fusion\.weight_step = 0\.3, expected a step that divides 1 \(0\.1, "
        r"0\.05\)$",
    ):
        replace(cfg, weight_step=0.3).validate("fusion")
    replace(cfg, weight_step=0.05).validate("fusion")
    replace(cfg, weight_step=1.0).validate("fusion")


def test_strategy_factories_build_each_strategy_from_the_config():
    cfg = small_config(
        ["tfidf_svm", "resnet50"],
        weights={"tfidf_svm": 1.0, "resnet50": 3.0},
        weight_step=0.25,
        seed=9,
        voting_stacking_meta="logreg",
        n_jobs=2,
    )
    factories = selection.strategy_factories(cfg)
    assert list(factories) == list(STRATEGIES)
    made = {name: f() for name, f in factories.items()}
    assert isinstance(made["max_rule"], MaxRule)
    assert type(made["soft_vote"]) is SoftVote and made["soft_vote"].weights_.tolist() == [0.25, 0.75]
    assert isinstance(made["soft_vote_fit"], FittedSoftVote) and made["soft_vote_fit"].step == 0.25
    for kind in META_LEARNERS:
        s = made[f"stacking_{kind}"]
        assert type(s) is Stacking and s.meta.kind == kind
        assert s.meta.params == getattr(cfg, kind) and (s.meta.seed, s.meta.n_jobs) == (9, 2)
    vs = made["voting_stacking"]
    assert type(vs) is VotingStacking and vs.meta.kind == "logreg" and vs.meta.seed == 9
    assert vs.vote.weights_.tolist() == [0.25, 0.75]
    assert factories["soft_vote"]() is not made["soft_vote"]  # a fresh instance per call


# --------------------------------------------------------------------------- fitting on validation only


def test_cv_splits_match_sklearn_with_and_without_groups():
    y = np.repeat(np.arange(4), 6)
    groups = np.arange(24) // 2  # pairs of rows share a group
    plain = selection.cv_splits(y, None, 3, seed=7)
    expected = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=7).split(np.zeros(24), y))
    assert len(plain) == 3
    for (tr, he), (etr, ehe) in zip(plain, expected):
        assert tr.tolist() == etr.tolist() and he.tolist() == ehe.tolist()
    grouped = selection.cv_splits(y, groups, 3, seed=7)
    expected = list(StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=7).split(np.zeros(24), y, groups))
    for (tr, he), (_etr, ehe) in zip(grouped, expected):
        assert he.tolist() == ehe.tolist()
        assert not set(groups[tr]) & set(groups[he])


def test_cv_splits_silences_the_small_class_warning_and_names_the_knob():
    y = np.array([0] * 6 + [1] * 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = selection.cv_splits(y, None, 3, seed=0)
    assert len(splits) == 3
    assert not [w for w in caught if "least populated" in str(w.message)]
    with pytest.raises(
        PipelineError,
        match=r"^fusion\.cv_folds = 5: cannot split 3 validation rows \(.*\); lower "
        r"fusion\.cv_folds$",
    ) as info:
        selection.cv_splits(np.array([0, 1, 2]), None, 5, seed=0)
    assert info.value.__cause__ is None and info.value.__suppress_context__


class _CountingStrategy:
    """Predicts, for every row, the class numbered like the count of rows it was fitted on."""

    def fit(self, probs, y):
        self.n = len(y)
        self.seen = probs[0][:, 0].copy()
        return self

    def predict_proba(self, probs):
        return onehot(np.full(len(probs[0]), self.n))


def test_cross_val_proba_fits_on_the_other_folds_and_fills_the_held_rows():
    probs = [np.tile(np.arange(5.0)[:, None], (1, K))]
    splits = [(np.array([0, 1, 2]), np.array([3, 4])), (np.array([3, 4]), np.array([0, 1, 2]))]
    made = []

    def factory():
        made.append(_CountingStrategy())
        return made[-1]

    out = selection.cross_val_proba(factory, probs, np.arange(5), splits)
    assert out.argmax(1).tolist() == [2, 2, 2, 3, 3]
    assert [m.seen.tolist() for m in made] == [[0.0, 1.0, 2.0], [3.0, 4.0]]
    partial = selection.cross_val_proba(factory, probs, np.arange(5), splits[:1])
    assert (partial[:3] == 0).all() and partial[3:].argmax(1).tolist() == [3, 3]


def test_fit_fusion_scores_out_of_fold_and_refits_on_all_rows():
    y = np.repeat(np.arange(K), 4)
    probs = [model_proba(y, FIRST_HALF, seed=1), model_proba(y, SECOND_HALF, seed=2)]
    cfg = small_config(["tfidf_svm", "resnet50"])
    fitted = selection.fit_fusion(probs, codes_to_indices(np.asarray(CLASS_CODES)[y]), cfg)
    assert list(fitted.strategies) == list(STRATEGIES) == list(fitted.oof) == list(fitted.val_scores)
    splits = selection.cv_splits(y, None, cfg.cv_folds, cfg.seed)
    factories = selection.strategy_factories(cfg)
    oof = selection.cross_val_proba(factories["soft_vote_fit"], probs, y, splits)
    assert np.array_equal(fitted.oof["soft_vote_fit"], oof)
    for name in STRATEGIES:
        assert fitted.val_scores[name] == scores(y, fitted.oof[name].argmax(1))
    full = factories["soft_vote_fit"]().fit(probs, y)
    assert fitted.strategies["soft_vote_fit"].weights_.tolist() == full.weights_.tolist()


WORKERS_SCRIPT = """
import rakuten  # first, as a stage script does: the numeric policy pins BLAS before numpy loads
from dataclasses import replace
import numpy as np
from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, codes_to_indices
from rakuten.fusion import selection
from rakuten.fusion.strategies import STRATEGIES
from tests.helpers.fusion_fakes import ALL, FIRST_HALF, SECOND_HALF, model_proba, small_config

y = np.repeat(np.arange(N_CLASSES), 12)
probs = [model_proba(y, FIRST_HALF, seed=1), model_proba(y, SECOND_HALF, seed=2), model_proba(y, ALL, seed=3)]
labels = codes_to_indices(np.asarray(CLASS_CODES)[y])
cfg = small_config(["tfidf_svm", "resnet50", "camembert"])
alone = selection.fit_fusion(probs, labels, replace(cfg, workers=1), min_pool_rows=0)
shared = selection.fit_fusion(probs, labels, replace(cfg, workers=2), min_pool_rows=0)
assert list(shared.strategies) == list(alone.strategies) == list(STRATEGIES)
assert shared.val_scores == alone.val_scores
other = [model_proba(y, ALL, seed=s) for s in (7, 8, 9)]
for name in STRATEGIES:
    assert np.array_equal(shared.oof[name], alone.oof[name]), name
    a, b = alone.strategies[name].predict_proba(other), shared.strategies[name].predict_proba(other)
    assert np.array_equal(a, b), name
print("same bits")
"""


@pytest.mark.slow
def test_fit_fusion_in_worker_processes_gives_the_in_process_bits():
    """fusion.workers is a runtime knob: the fits spread over spawned processes return the same out-of-fold
    probabilities and fitted strategies (same predictions, bit for bit) as one process. Run in a fresh
    interpreter that imports rakuten first, as the stage does (this test process loaded numpy before the
    numeric policy pinned its BLAS, so its own logistic regressions round differently from the workers')."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", WORKERS_SCRIPT], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "same bits", done.stderr[-2000:]


def test_fit_fusion_accepts_class_indices_as_floats():
    y = np.repeat(np.arange(3), 3)
    probs = [onehot(y, hot=0.8), onehot((y + 1) % 3, hot=0.6)]
    cfg = small_config(["tfidf_svm", "resnet50"])
    as_int = selection.fit_fusion(probs, y, cfg)
    as_float = selection.fit_fusion(probs, y.astype(np.float64), cfg)
    assert as_float.val_scores == as_int.val_scores
    assert as_float.val_scores["max_rule"]["accuracy"] == 1.0  # model 1 is the more confident everywhere


def test_choose_strategy_best_score_ties_go_to_the_earlier():
    tied = {s: {"weighted_f1": 0.5} for s in STRATEGIES}
    assert selection.choose_strategy(tied) == "max_rule"
    tied["stacking_xgboost"] = {"weighted_f1": 0.9}
    tied["voting_stacking"] = {"weighted_f1": 0.9}
    assert selection.choose_strategy(tied) == "stacking_xgboost"
    assert selection.choose_strategy(tied, "soft_vote") == "soft_vote"


# --------------------------------------------------------------------------- the fused model


def test_availability_columns_follow_the_modalities():
    t, i = np.array([1, 0, 1]), np.array([1, 1, 0])
    out = availability(["text", "image", "text"], t, i)
    assert out.dtype == bool and out.tolist() == [[True, True, True], [False, True, False], [True, False, True]]
    empty = availability([], t, i)
    assert empty.shape == (3, 0) and empty.dtype == bool


def test_fused_model_fallback_weights_renormalised_or_equal():
    a, b, c = onehot([0, 0]), onehot([1, 1]), onehot([2, 2])
    model = FusedModel("max_rule", ["m1", "m2", "m3"], ["text", "text", "image"], MaxRule(), np.array([0.0, 0.0, 1.0]))
    available = np.array([[True, True, False], [True, True, True]])
    out = model.predict_proba([a, b, c], available)
    # row 0: fallback weights (0, 0) over the available m1, m2 -> equal weights
    assert np.allclose(out[0, :3], [0.5, 0.5, 0.0])
    # row 1: everything available -> the combiner (max rule: 1/3 each)
    assert np.allclose(out[1, :3], [1 / 3] * 3)
    assert np.array_equal(model.predict_proba([a, b, c]), MaxRule().predict_proba([a, b, c]))
    with pytest.raises(ValueError, match=r"^fused model expects 3 matrices \(m1, m2, m3\), got 2$"):
        model.predict_proba([a, b])
    weighted = FusedModel(
        "max_rule", ["m1", "m2", "m3"], ["text", "text", "image"], MaxRule(), np.array([1.0, 3.0, 4.0])
    )
    out = weighted.predict_proba([a, b, c], np.array([[True, True, False], [False, False, False]]))
    assert np.allclose(out[0, :3], [0.25, 0.75, 0.0])
    assert np.allclose(out[1, :3], [1 / 3] * 3)  # nothing available: the combiner on all models
    # validation-fitted weights summing to 1 (as soft_vote_fit gives them): renormalised over m1, m2
    fitted = FusedModel("max_rule", ["m1", "m2", "m3"], ["text", "text", "image"], MaxRule(), np.array([0.1, 0.3, 0.6]))
    out = fitted.predict_proba([a[:1], b[:1], c[:1]], np.array([[True, True, False]]))
    assert np.allclose(out[0, :3], [0.25, 0.75, 0.0])


class _Float32Combiner:
    def predict_proba(self, mats):
        return np.mean(mats, axis=0).astype(np.float32)


def test_fused_model_output_is_float64():
    model = FusedModel("x", ["m1"], ["text"], _Float32Combiner(), np.array([1.0]))
    assert model.predict_proba([onehot([0, 1])]).dtype == np.float64


def test_inputs_used_with_a_single_modality():
    model = FusedModel("max_rule", ["m1"], ["text"], MaxRule(), np.array([1.0]))
    assert model.inputs_used([True, False], [False, False]) == ["text", "none (text empty): all models on blank input"]


def test_summary_with_and_without_combiner_weights():
    model = FusedModel("max_rule", ["a", "b"], ["text", "image"], MaxRule(), np.array([0.25, 0.75]))
    assert model.summary() == {
        "strategy": "max_rule",
        "models": ["a", "b"],
        "modalities": ["text", "image"],
        "weights": None,
        "fallback_weights": {"a": 0.25, "b": 0.75},
        "calibration": {"method": "none", "params": {}},
        "review_threshold": None,
    }
    voted = replace_combiner(model, SoftVote([1, 4]))
    assert voted.summary()["weights"] == {"a": 0.2, "b": 0.8}
    assert all(type(v) is float for v in voted.summary()["weights"].values())


def replace_combiner(model, combiner):
    return FusedModel(model.strategy, model.models, model.modalities, combiner, model.fallback_weights)


def test_save_writes_the_summary_and_load_names_the_stage(tmp_path):
    model = FusedModel("soft_vote", ["a", "b"], ["text", "image"], SoftVote([1, 1]), np.array([0.5, 0.5]))
    persistence.save(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")) == [
        "fusion.joblib",
        "fusion.json",
    ]
    text = (tmp_path / "m" / "fusion.json").read_text(encoding="utf-8")
    assert text == json.dumps(model.summary(), indent=2) + "\n"
    assert persistence.load(tmp_path / "m").summary() == model.summary()
    with pytest.raises(PipelineError, match=r"fusion\.joblib: fused model not found; run `dvc repro fusion`$"):
        persistence.load(tmp_path / "nothing")


# --------------------------------------------------------------------------- contract tables


def _tables(n: int = 4):
    rows = pd.DataFrame(
        {
            "row_id": [30, 10, 20, 40][:n],
            "split": ["val", "test", "val", "official_test"][:n],
            "prdtypecode": pd.array([10, 40, 50, None][:n], dtype="Int64"),
        }
    )
    from rakuten.contracts.model_files import proba_frame

    return rows, proba_frame(rows, onehot([0, 1, 2, 3][:n])), proba_frame(rows, onehot([4, 5, 6, 7][:n]))


def test_align_tables_sorts_by_row_id():
    _, a, b = _tables()
    rows, mats = fusion.align_tables({"a": a, "b": b.iloc[::-1]})
    assert rows.columns.tolist() == ["row_id", "split", "prdtypecode"]
    assert rows["row_id"].tolist() == [10, 20, 30, 40] and rows.index.tolist() == [0, 1, 2, 3]
    assert rows["split"].tolist() == ["test", "val", "val", "official_test"]
    assert [m.argmax(1).tolist() for m in mats] == [[1, 2, 0, 3], [5, 6, 4, 7]]
    assert mats[0].dtype == np.float64


def test_align_tables_errors_name_the_stale_table():
    _, a, b = _tables()
    with pytest.raises(
        PipelineError,
        match=r"^reports/probs/b\.parquet: row_id 40 missing \(present in a\); "
        r"expected the same rows in every model table \(rerun `dvc repro b`\)$",
    ):
        fusion.align_tables({"a": a, "b": b.iloc[:3]})
    with pytest.raises(PipelineError, match=r"^reports/probs/b\.parquet: row_id 40 not in a; expected the same rows"):
        fusion.align_tables({"a": a.iloc[:3], "b": b})
    with pytest.raises(PipelineError, match=r"^reports/probs/b\.parquet: row_id \? not in a; expected"):
        fusion.align_tables({"a": a, "b": pd.concat([b, b.iloc[:1]])})
    changed = b.copy()
    changed.loc[0, "split"] = "test"
    with pytest.raises(
        PipelineError,
        match=r"^reports/probs/b\.parquet: split column differs from a; rerun "
        r"`dvc repro b`$",
    ):
        fusion.align_tables({"a": a, "b": changed})
    other = b.copy()
    other["row_id"] = [31, 10, 20, 40]
    with pytest.raises(PipelineError, match=r"row_id 30 missing \(present in a\)"):
        fusion.align_tables({"a": a, "b": other})


@pytest.fixture(scope="module")
def fused():
    tables, _ = make_tables({"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF}, per_class=4)
    ids = tables["tfidf_svm"]["row_id"]
    split = tables["tfidf_svm"]["split"].to_numpy()
    image_ok = pd.Series(True, index=ids)
    val_id = int(ids[split == "val"].iloc[0])
    test_id = int(ids[split == "test"].iloc[0])
    image_ok[[val_id, test_id]] = False
    cfg = small_config(list(tables))
    plain = fusion.fuse_tables(tables, ["text", "image"], cfg)
    partial = fusion.fuse_tables(tables, ["text", "image"], cfg, image_ok=image_ok)
    return tables, plain, partial, val_id, test_id


def test_fuse_tables_comparison_and_predictions(fused):
    tables, result, _, _, _ = fused
    comp = result.comparison
    assert comp.columns.tolist() == [
        "strategy",
        "chosen",
        "val_cv_weighted_f1",
        "val_cv_macro_f1",
        "val_cv_accuracy",
        "test_weighted_f1",
        "test_macro_f1",
        "test_accuracy",
    ]
    assert comp["strategy"].tolist() == list(STRATEGIES)
    assert comp["chosen"].tolist() == [s == result.model.strategy for s in STRATEGIES]
    pred = result.predictions
    assert pred.columns.tolist() == ["row_id", "split", "prdtypecode", "strategy", "predicted"]
    assert str(pred["prdtypecode"].dtype) == "Int64"
    t = tables["tfidf_svm"]
    n_val, n_test = int((t["split"] == "val").sum()), int((t["split"] == "test").sum())
    assert len(pred) == len(STRATEGIES) * (n_val + n_test)
    for name, row in comp.set_index("strategy").iterrows():
        for split in ("val", "test"):
            part = pred[(pred["strategy"] == name) & (pred["split"] == split)]
            s = scores(part["prdtypecode"].to_numpy(np.int64), part["predicted"].to_numpy(np.int64))
            prefix = "val_cv" if split == "val" else "test"
            assert [row[f"{prefix}_{k}"] for k in s] == list(s.values()), (name, split)
    labels = t.set_index("row_id")["prdtypecode"]
    assert (pred["prdtypecode"].to_numpy() == labels.loc[pred["row_id"]].to_numpy()).all()
    assert result.model.models == ["tfidf_svm", "resnet50"] and result.model.modalities == ["text", "image"]
    assert result.model.fallback_weights is not None and len(result.model.fallback_weights) == 2


def test_fuse_tables_table_holds_oof_on_val_and_the_model_on_other_rows(fused):
    tables, result, _, _, _ = fused
    rows, mats = fusion.align_tables(tables)
    table = result.table
    assert table["row_id"].tolist() == rows["row_id"].tolist()
    proba = table[list(PROBA_COLUMNS)].to_numpy(np.float64)
    other = (rows["split"] != "val").to_numpy()
    expected = normalise_rows(result.model.predict_proba([m[other] for m in mats]))
    assert np.allclose(proba[other], expected, atol=1e-6)
    val_pred = result.predictions[
        (result.predictions["split"] == "val") & (result.predictions["strategy"] == result.model.strategy)
    ]
    uncalibrated = result.uncalibrated
    val_table = uncalibrated[uncalibrated["split"] == "val"].set_index("row_id").loc[val_pred["row_id"]]
    codes = np.asarray(CLASS_CODES)[val_table[list(PROBA_COLUMNS)].to_numpy().argmax(1)]
    assert codes.tolist() == val_pred["predicted"].tolist()
    raw_other = uncalibrated[list(PROBA_COLUMNS)].to_numpy(np.float64)[other]
    assert np.allclose(proba[other], result.model.calibrator.transform(raw_other), atol=1e-5)


def test_fuse_tables_missing_image_rows_use_the_text_model(fused):
    """Before calibration (the uncalibrated table), a row without its image is the text model's alone; the
    calibrated table is that, calibrated (test rows: the model's calibrator)."""
    tables, plain, partial, val_id, test_id = fused
    text = tables["tfidf_svm"].set_index("row_id")[list(PROBA_COLUMNS)]
    table = partial.uncalibrated.set_index("row_id")[list(PROBA_COLUMNS)]
    for row_id in (val_id, test_id):
        assert np.allclose(table.loc[row_id].to_numpy(), text.loc[row_id].to_numpy(), atol=1e-6)
    calibrated = partial.table.set_index("row_id").loc[test_id, list(PROBA_COLUMNS)].to_numpy(np.float64)
    expected = partial.model.calibrator.transform(text.loc[[test_id]].to_numpy(np.float64))[0]
    assert np.allclose(calibrated, expected, atol=1e-5)
    untouched = plain.uncalibrated.set_index("row_id")[list(PROBA_COLUMNS)].drop(index=[val_id, test_id])
    assert np.allclose(table.drop(index=[val_id, test_id]).to_numpy(), untouched.to_numpy(), atol=1e-6)
    # image_ok given for only some rows: the others count as readable (fillna(True))
    again = fusion.fuse_tables(
        tables,
        ["text", "image"],
        small_config(list(tables)),
        image_ok=pd.Series([False], index=[test_id]),
        text_ok=pd.Series([True], index=[test_id]),
    )
    got = again.uncalibrated.set_index("row_id").loc[test_id, list(PROBA_COLUMNS)].to_numpy(np.float64)
    assert np.allclose(got, text.loc[test_id].to_numpy(), atol=1e-6)
    others = again.uncalibrated.set_index("row_id")[list(PROBA_COLUMNS)].drop(index=[test_id])
    assert np.allclose(
        others.to_numpy(),
        plain.uncalibrated.set_index("row_id")[list(PROBA_COLUMNS)].drop(index=[test_id]).to_numpy(),
        atol=1e-6,
    )  # rows not listed: both inputs present
    assert again.predictions.index.tolist() == list(range(len(again.predictions)))


def test_fuse_tables_text_ok_alone_drops_the_text_model(fused):
    tables, plain, _, _, test_id = fused
    result = fusion.fuse_tables(
        tables, ["text", "image"], small_config(list(tables)), text_ok=pd.Series([False], index=[test_id])
    )
    image = tables["resnet50"].set_index("row_id")[list(PROBA_COLUMNS)]
    table = result.uncalibrated.set_index("row_id")[list(PROBA_COLUMNS)]
    assert np.allclose(table.loc[test_id].to_numpy(), image.loc[test_id].to_numpy(), atol=1e-6)
    assert np.allclose(
        table.drop(index=[test_id]).to_numpy(),
        plain.uncalibrated.set_index("row_id")[list(PROBA_COLUMNS)].drop(index=[test_id]).to_numpy(),
        atol=1e-6,
    )


def test_fuse_tables_needs_validation_rows():
    tables, _ = make_tables({"tfidf_svm": ALL}, per_class=1)
    no_val = {n: t[t["split"] != "val"] for n, t in tables.items()}
    with pytest.raises(PipelineError, match=r"^reports/probs: no validation rows; fusion is fitted on split == val$"):
        fusion.fuse_tables(no_val, ["text"], small_config(list(tables)))


def test_fuse_tables_groups_keep_duplicates_in_one_fold(monkeypatch):
    tables, _ = make_tables({"tfidf_svm": ALL}, per_class=3)
    t = tables["tfidf_svm"]
    groups = pd.Series(t["row_id"].to_numpy() // 2, index=t["row_id"].to_numpy())
    seen = []
    real = selection.cv_splits

    def spy(y, g, n_splits, seed):
        seen.append(None if g is None else np.asarray(g).copy())
        return real(y, g, n_splits, seed)

    monkeypatch.setattr(selection, "cv_splits", spy)
    cfg = small_config(list(tables), strategy="voting_stacking")  # forced: not what "auto" would pick
    forced = fusion.fuse_tables(tables, ["text"], cfg, groups=groups)
    assert forced.model.strategy == "voting_stacking" and forced.comparison["chosen"].tolist()[-1] is True
    auto = selection.choose_strategy(
        {r.strategy: {"weighted_f1": r.val_cv_weighted_f1} for r in forced.comparison.itertuples()}
    )
    assert auto != "voting_stacking"
    val_ids = t.loc[t["split"] == "val", "row_id"].sort_values().to_numpy()
    assert seen[-1].tolist() == (val_ids // 2).tolist()
    fusion.fuse_tables(tables, ["text"], cfg, groups=groups.iloc[1:])  # a val row without group: plain folds
    assert seen[-1] is None

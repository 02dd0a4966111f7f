"""TF-IDF + classifier building blocks on a tiny hand-written corpus (docs/mutation.md)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE
from imblearn.under_sampling import RandomUnderSampler
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS, N_CLASSES
from rakuten.core.config import ConfigError
from rakuten.core.errors import PipelineError
from rakuten.models import tfidf_svm as T

CFG = T.TfidfSvmConfig(n_jobs=1, max_iter=2000)
WORDS = {10: "livre roman page", 40: "manette console jeu", 2583: "piscine pompe eau"}


def corpus(per_class: int = 6, codes=(10, 40, 2583)) -> pd.DataFrame:
    rows = []
    for code in codes:
        a, b, c = WORDS[code].split()
        for i in range(per_class):
            rows.append(
                {
                    "row_id": len(rows),
                    "text_norm": f"{a} {b if i % 2 else c} mot{i}",
                    "text_light": f"{a.upper()} {c}",
                    "prdtypecode": code,
                }
            )
    return pd.DataFrame(rows)


def test_validate_messages():
    CFG.validate("tfidf_svm")
    replace(CFG, ngram_min=2, ngram_max=2).validate("t")
    with pytest.raises(ConfigError, match=r"^t\.ngram_min = 3 > t\.ngram_max = 2, expected ngram_min <= ngram_max$"):
        replace(CFG, ngram_min=3).validate("t")
    with pytest.raises(
        ConfigError,
        match=r"^t\.grid\.gamma is not searchable; expected one of C, max_features, max_df, "
        r"min_df, ngram_max, sgd\.alpha, rf\.n_estimators, rf\.max_depth$",
    ):
        replace(CFG, grid={"C": (1,), "gamma": (1,)}).validate("t")
    with pytest.raises(ConfigError, match=r"^t\.grid\.C = \[\], expected a non-empty list of values$"):
        replace(CFG, grid={"C": ()}).validate("t")
    with pytest.raises(ConfigError, match=r"^t\.grid\.max_df\[1\] = 2\.0, expected a number in \(0\.0, 1\.0\]$"):
        replace(CFG, grid={"max_df": (0.5, 2.0)}).validate("t")
    replace(CFG, grid={"max_df": (0.5, 1.0), "rf.max_depth": (0, 3)}).validate("t")


def test_smote_under_targets():
    y = np.array([1] * 2 + [2] * 4 + [3] * 6 + [4] * 9)  # counts 2, 4, 6, 9 -> median int(5.0) = 5
    assert T._below_median_up(y) == {1: 5, 2: 5}
    assert T._above_median_down(y) == {1: 2, 2: 4, 3: 5, 4: 5}
    assert all(type(v) is int for v in T._above_median_down(y).values())
    y = np.array([1] * 3 + [2] * 5 + [3] * 5)  # median 5: a class at the median is left alone
    assert T._below_median_up(y) == {1: 5}
    assert T._above_median_down(y) == {1: 3, 2: 5, 3: 5}


def test_smallest_class():
    y = np.array([1] * 7 + [2] * 3 + [3] * 10)
    assert T._smallest_class(y, 1.0) == 3
    assert T._smallest_class(y, 0.5) == 1  # int(1.5)
    assert T._smallest_class(y, 2 / 3) == 2


def test_smote_neighbours_capped_below_the_smallest_class():
    s = T._smote(replace(CFG, smote_k=5, seed=3), smallest=4, strategy="not majority")
    assert isinstance(s, SMOTE)
    assert (s.k_neighbors, s.sampling_strategy, s.random_state) == (3, "not majority", 3)
    assert T._smote(replace(CFG, smote_k=2), smallest=10, strategy="auto").k_neighbors == 2
    assert T._smote(CFG, smallest=1, strategy="auto").k_neighbors == 1


def test_resampling_steps():
    assert T._resampling_steps(CFG, 5) == []
    ((name, smote),) = T._resampling_steps(replace(CFG, resample="smote"), 5)
    assert name == "smote" and smote.sampling_strategy == "not majority" and smote.k_neighbors == 4
    (n1, under), (n2, smote) = T._resampling_steps(replace(CFG, resample="smote_under", seed=8), 3)
    assert (n1, n2) == ("under", "smote")
    assert isinstance(under, RandomUnderSampler) and under.sampling_strategy is T._above_median_down
    assert under.random_state == 8
    assert smote.sampling_strategy is T._below_median_up and smote.k_neighbors == 2 and smote.random_state == 8


def test_classifier_parameters():
    svm = T._classifier(replace(CFG, C=0.7, calibration="isotonic", calibration_cv=4, seed=5, n_jobs=1), smallest=3)
    assert isinstance(svm, CalibratedClassifierCV) and svm.method == "isotonic" and svm.n_jobs == 1
    assert isinstance(svm.cv, StratifiedKFold) and svm.cv.n_splits == 3 and svm.cv.shuffle and svm.cv.random_state == 5
    inner = svm.estimator
    assert isinstance(inner, LinearSVC)
    assert (inner.C, inner.class_weight, inner.dual, inner.max_iter, inner.random_state) == (
        0.7,
        "balanced",
        True,
        2000,
        5,
    )
    assert T._classifier(replace(CFG, calibration_cv=4), smallest=9).cv.n_splits == 4
    assert T._classifier(replace(CFG, calibration_cv=2), smallest=2).cv.n_splits == 2
    y = np.array([10, 10, 10, 40, 50, 50])
    with pytest.raises(
        PipelineError,
        match=r"^tfidf_svm: prdtypecode 40 \(1 row\(s\)\): fewer than 2 training rows; "
        r"calibrating the SVM needs at least 2 per class \(use more data or another "
        r"classifier: rf, sgd, logreg\)$",
    ):
        T.build_pipeline(CFG, y)
    with pytest.raises(
        PipelineError,
        match=r"^tfidf_svm: prdtypecode 10 \(1 row\(s\)\), 40 \(0 row\(s\)\), "
        r"50 \(1 row\(s\)\): fewer",
    ):
        T.build_pipeline(CFG, y, fit_share=0.6)  # a cross-validation fold fits on 60 % of each class
    assert isinstance(T.build_pipeline(replace(CFG, classifier="rf"), y).named_steps["clf"], RandomForestClassifier)
    with pytest.raises(
        PipelineError,
        match=r"^tfidf_svm: a class has 1 training row\(s\); calibrating the SVM needs "
        r"at least 2 per class \(use more data or another classifier\)$",
    ):
        T._classifier(CFG, smallest=1)
    rf = T._classifier(
        replace(
            CFG, classifier="rf", class_weight="none", seed=2, rf=T.RandomForestConfig(n_estimators=11, max_depth=0)
        ),
        smallest=1,
    )
    assert isinstance(rf, RandomForestClassifier)
    assert (rf.n_estimators, rf.max_depth, rf.class_weight, rf.n_jobs, rf.random_state) == (11, None, None, 1, 2)
    assert T._classifier(replace(CFG, classifier="rf"), smallest=1).class_weight == "balanced"
    assert T._classifier(replace(CFG, classifier="rf", rf=T.RandomForestConfig(max_depth=4)), 1).max_depth == 4
    sgd = T._classifier(replace(CFG, classifier="sgd", sgd=T.SgdConfig(alpha=0.01), seed=4), smallest=1)
    assert isinstance(sgd, SGDClassifier)
    assert (sgd.loss, sgd.alpha, sgd.class_weight, sgd.max_iter, sgd.tol, sgd.random_state, sgd.n_jobs) == (
        "log_loss",
        0.01,
        "balanced",
        2000,
        1e-4,
        4,
        1,
    )
    lr = T._classifier(replace(CFG, classifier="logreg", C=3.0, seed=6), smallest=1)
    assert isinstance(lr, LogisticRegression)
    assert (lr.C, lr.class_weight, lr.max_iter, lr.random_state) == (3.0, "balanced", 2000, 6)


def test_build_pipeline_steps_and_vectoriser():
    cfg = replace(
        CFG,
        max_features=50,
        min_df=2,
        max_df=0.5,
        ngram_min=1,
        ngram_max=3,
        sublinear_tf=False,
        resample="smote_under",
        calibration_cv=5,
    )
    pipe = T.build_pipeline(cfg, np.array([1] * 8 + [2] * 6), fit_share=0.5)
    assert [name for name, _ in pipe.steps] == ["tfidf", "under", "smote", "clf"]
    tfidf = pipe.named_steps["tfidf"]
    assert (tfidf.max_features, tfidf.min_df, tfidf.max_df, tfidf.ngram_range, tfidf.sublinear_tf, tfidf.dtype) == (
        50,
        2,
        0.5,
        (1, 3),
        False,
        np.float32,
    )
    # fit_share 0.5 of the smallest class (6) = 3 rows: SMOTE k = 2, calibration folds 3
    assert pipe.named_steps["smote"].k_neighbors == 2 and pipe.named_steps["clf"].cv.n_splits == 3
    default = T.build_pipeline(replace(CFG, calibration_cv=10), np.array([1] * 8 + [2] * 6))
    assert [name for name, _ in default.steps] == ["tfidf", "clf"]
    assert default.named_steps["clf"].cv.n_splits == 6  # all of the smallest class (fit_share 1)
    assert default.named_steps["tfidf"].sublinear_tf is True


def test_texts_and_labels():
    frame = pd.DataFrame({"text_norm": ["a", None], "prdtypecode": [10, 40]})
    assert T._texts(frame, "text_norm") == ["a", ""]
    with pytest.raises(
        PipelineError,
        match=r"^model frame: missing column text_light; expected text\.parquet joined "
        r"on row_id$",
    ):
        T._texts(frame, "text_light")
    labels = T._labels(frame)
    assert labels.dtype == np.int64 and labels.tolist() == [10, 40]
    assert T._labels(pd.DataFrame({"prdtypecode": [10.0, 40.0]})).dtype == np.int64
    message = r"^training frame: column prdtypecode must be present and filled on every row$"
    with pytest.raises(PipelineError, match=message):
        T._labels(frame.drop(columns="prdtypecode"))
    with pytest.raises(PipelineError, match=message):
        T._labels(pd.DataFrame({"prdtypecode": pd.array([10, None], dtype="Int64")}))


@pytest.fixture(scope="module")
def logreg():
    train = corpus()
    return train, T.train(train, None, replace(CFG, classifier="logreg", C=10.0))


def test_predict_proba_in_canonical_columns(logreg):
    train, model = logreg
    proba = T.predict_proba(model, pd.DataFrame({"text_norm": ["livre roman", "manette jeu", "piscine eau", None]}))
    assert proba.shape == (4, N_CLASSES) and proba.dtype == np.float64
    assert np.allclose(proba.sum(1), 1)
    idx = [CLASS_CODES.index(c) for c in (10, 40, 2583)]
    absent = np.setdiff1d(np.arange(N_CLASSES), idx)
    assert (proba[:, absent] == 0).all()
    assert proba[:3].argmax(1).tolist() == idx
    raw = model.pipeline.predict_proba(["livre roman"])[0]
    assert np.allclose(proba[0, idx], raw / raw.sum())


class _StubPipeline:
    """A fitted pipeline's interface with probabilities that do not sum to 1."""

    classes_ = np.array([40, 10])

    def predict_proba(self, texts):
        return np.array([[1.0, 3.0]] * len(texts))


def test_predict_proba_normalises_rows():
    model = T.TfidfModel(_StubPipeline(), CFG)
    proba = T.predict_proba(model, pd.DataFrame({"text_norm": ["a", "b"]}))
    assert proba[:, CLASS_CODES.index(40)].tolist() == [0.25, 0.25]
    assert proba[:, CLASS_CODES.index(10)].tolist() == [0.75, 0.75]
    assert proba.sum() == 2.0


def test_train_uses_the_configured_text_column():
    train = corpus()
    model = T.train(train, None, replace(CFG, classifier="logreg", text_column="text_light"))
    vocab = set(model.pipeline.named_steps["tfidf"].get_feature_names_out())
    assert "livre" in vocab and "mot1" not in vocab and model.grid_results == []
    assert model.config.text_column == "text_light"


def noisy_corpus() -> tuple[list[str], np.ndarray]:
    """5 rows per class: one class word and three words shared by every class (CV scores below 1, and
    different for other folds)."""
    rng = np.random.default_rng(0)
    shared = "rouge bleu vert grand petit neuf lot pack".split()
    texts, y = [], []
    for code, words in WORDS.items():
        for i in range(5):
            texts.append(" ".join([words.split()[i % 3], *rng.choice(shared, 3)]))
            y.append(code)
    return texts, np.array(y)


def _cv(cfg, values, texts, y, n_splits):
    pipe = T.build_pipeline(T._with_values(cfg, values), y, fit_share=1 - 1 / n_splits)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=cfg.seed)
    return round(float(cross_val_score(pipe, texts, y, cv=folds, scoring="f1_weighted").mean()), 6)


def test_grid_search_scores_every_combination_like_sklearn():
    texts, y = noisy_corpus()
    cfg = replace(CFG, classifier="logreg", grid={"ngram_max": (1, 2), "C": (0.01, 5.0)}, grid_cv=4, seed=1)
    best, results = T.grid_search(cfg, texts, y)
    assert [(r["C"], r["ngram_max"]) for r in results] == [(0.01, 1), (0.01, 2), (5.0, 1), (5.0, 2)]
    assert list(results[0]) == ["C", "ngram_max", "cv_weighted_f1"]
    # folds: min(grid_cv 4, smallest class 5) = 4, seeded
    expected = [_cv(cfg, {"C": r["C"], "ngram_max": r["ngram_max"]}, texts, y, 4) for r in results]
    assert [r["cv_weighted_f1"] for r in results] == expected
    assert len(set(expected)) == 4 and max(expected) < 1
    top = max(range(4), key=lambda i: expected[i])
    assert (best.C, best.ngram_max) == (results[top]["C"], results[top]["ngram_max"]) and best.grid == {}
    model = T.train(pd.DataFrame({"text_norm": texts, "prdtypecode": y}), None, cfg)
    assert model.grid_results == results and model.config == best


def test_grid_search_folds_never_exceed_the_smallest_class_and_are_at_least_two():
    texts, y = noisy_corpus()
    two = replace(CFG, classifier="logreg", grid={"C": (1.0,)}, grid_cv=2, seed=3)
    _, results = T.grid_search(two, texts, y)
    assert results[0]["cv_weighted_f1"] == _cv(two, {"C": 1.0}, texts, y, 2)
    keep = np.r_[0:3, 5:10, 10:15]  # class 10 keeps 3 rows: 3 folds, not grid_cv = 5
    small = replace(two, grid_cv=5)
    _, results = T.grid_search(small, [texts[i] for i in keep], y[keep])
    assert results[0]["cv_weighted_f1"] == _cv(small, {"C": 1.0}, [texts[i] for i in keep], y[keep], 3)


def test_grid_search_of_the_svm_sizes_calibration_by_the_fold_share():
    # 2 folds: each fit sees half the rows, so the smallest class has int(5 * 0.5) = 2 -> 2 calibration folds
    texts, y = noisy_corpus()
    svm = replace(CFG, classifier="svm", calibration_cv=3, grid={"C": (1.0,)}, grid_cv=2, seed=4)
    _, results = T.grid_search(svm, texts, y)
    assert results[0]["cv_weighted_f1"] == _cv(svm, {"C": 1.0}, texts, y, 2)


def test_grid_search_errors_are_raised_not_scored_nan():
    texts, y = noisy_corpus()
    cfg = replace(CFG, classifier="logreg", max_df=1.0, grid={"min_df": (100,)}, grid_cv=2)
    with pytest.raises(ValueError, match=r"^max_df corresponds to < documents than min_df$"):  # a failing fit in CV
        T.grid_search(cfg, texts, y)


def test_with_values_types_values_by_their_knob():
    out = T._with_values(replace(CFG, grid={"C": (1,)}), {"C": 2, "max_features": 30})
    assert out.C == 2.0 and type(out.C) is float and out.max_features == 30 and out.grid == {}
    with pytest.raises(ConfigError, match=r"^tfidf_svm\.grid\.max_df = 3\.0, expected"):
        T._with_values(CFG, {"max_df": 3.0})


def test_top_terms_of_a_linear_model(logreg):
    _, model = logreg
    table = T.top_terms(model, k=2)
    assert table.columns.tolist() == ["prdtypecode", "label", "rank", "term", "weight"]
    assert table["prdtypecode"].tolist() == [10, 10, 40, 40, 2583, 2583]
    assert table["rank"].tolist() == [1, 2] * 3
    assert table["label"].tolist() == [CLASS_LABELS[c] for c in table["prdtypecode"]]
    clf = model.pipeline.named_steps["clf"]
    vocab = model.pipeline.named_steps["tfidf"].get_feature_names_out()
    for i, code in enumerate(clf.classes_):
        order = np.argsort(-clf.coef_[i], kind="stable")[:2]
        part = table[table["prdtypecode"] == code]
        assert part["term"].tolist() == [str(vocab[j]) for j in order]
        assert part["weight"].tolist() == [round(float(clf.coef_[i][j]), 6) for j in order]
    assert set(table.loc[table["prdtypecode"] == 10, "term"]) <= {
        "livre",
        "roman",
        "page",
        "livre roman",
        "livre page",
        "roman mot1",
        "page mot0",
    }
    assert len(T.top_terms(model)) == 3 * CFG.top_terms or len(T.top_terms(model)) == 3 * len(vocab)


class _StubLinear:
    classes_ = np.array([40])

    def __init__(self, coef):
        self.coef_ = coef


class _StubVectoriser:
    def __init__(self, vocab):
        self.vocab = np.array(vocab, dtype=object)

    def get_feature_names_out(self):
        return self.vocab


class _StubSteps:
    def __init__(self, steps):
        self.named_steps = steps


def test_top_terms_keep_vocabulary_order_between_equal_weights():
    # 40 terms, weights 0/1/2 repeating: many ties, where an unstable sort reorders equal weights
    vocab = [f"t{i:02d}" for i in range(40)]
    coef = np.array([[float(i % 3) for i in range(40)]])
    model = T.TfidfModel(
        _StubSteps({"tfidf": _StubVectoriser(vocab), "clf": _StubLinear(coef)}), replace(CFG, top_terms=40)
    )
    table = T.top_terms(model)
    twos = [t for i, t in enumerate(vocab) if i % 3 == 2]
    ones = [t for i, t in enumerate(vocab) if i % 3 == 1]
    zeros = [t for i, t in enumerate(vocab) if i % 3 == 0]
    assert table["term"].tolist() == twos + ones + zeros
    assert table["rank"].tolist() == list(range(1, 41)) and set(table["prdtypecode"]) == {40}
    assert T.top_terms(model, k=3)["term"].tolist() == ["t02", "t05", "t08"]


def test_top_terms_of_the_calibrated_svm_average_the_folds():
    train = corpus()
    model = T.train(train, None, CFG)
    clf = model.pipeline.named_steps["clf"]
    coef = np.mean([c.estimator.coef_ for c in clf.calibrated_classifiers_], axis=0)
    classes, weights = T._class_term_weights(model)
    assert classes.tolist() == [10, 40, 2583] and np.array_equal(weights, coef)
    table = T.top_terms(model, k=1)
    vocab = model.pipeline.named_steps["tfidf"].get_feature_names_out()
    assert table["term"].tolist() == [str(vocab[np.argmax(coef[i])]) for i in range(3)]


def test_top_terms_of_a_random_forest_weigh_importance_by_class_mean():
    train = corpus()
    model = T.train(train, None, replace(CFG, classifier="rf", rf=T.RandomForestConfig(n_estimators=15)))
    with pytest.raises(ValueError, match=r"^top_terms of a random forest needs the training frame$"):
        T.top_terms(model, k=2)
    table = T.top_terms(model, train, k=1)
    x = model.pipeline.named_steps["tfidf"].transform(train["text_norm"]).toarray()
    importance = model.pipeline.named_steps["clf"].feature_importances_
    y = train["prdtypecode"].to_numpy()
    vocab = model.pipeline.named_steps["tfidf"].get_feature_names_out()
    for code, row in zip([10, 40, 2583], table.itertuples()):
        w = x[y == code].mean(axis=0) * importance
        j = np.argsort(-w, kind="stable")[0]
        assert (row.prdtypecode, row.term, row.weight) == (code, str(vocab[j]), round(float(w[j]), 6))


def test_save_and_load(tmp_path, logreg):
    train, model = logreg
    model.grid_results = [{"C": 1.0, "cv_weighted_f1": 0.5}]
    model.pipeline.named_steps["tfidf"]._stop_words_id = 123
    T.save(model, tmp_path / "m")
    assert "_stop_words_id" not in model.pipeline.named_steps["tfidf"].__dict__
    T.save(model, tmp_path / "again")  # saving again (the id already dropped) works too
    import joblib

    joblib.dump(model.pipeline, tmp_path / "reference.joblib", compress=3)  # compressed, zlib level 3
    assert (tmp_path / "again" / "model.joblib").read_bytes() == (tmp_path / "reference.joblib").read_bytes()
    files = sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith("."))
    assert files == ["config.json", "grid.json", "model.joblib"]
    from dataclasses import asdict

    assert (tmp_path / "m/config.json").read_text() == json.dumps(asdict(model.config), indent=2, sort_keys=True) + "\n"
    assert (tmp_path / "m/grid.json").read_text() == json.dumps(model.grid_results, indent=2) + "\n"
    loaded = T.load(tmp_path / "m")
    assert loaded.config == model.config and loaded.grid_results == model.grid_results
    frame = pd.DataFrame({"text_norm": ["livre", "pompe"]})
    assert np.array_equal(T.predict_proba(loaded, frame), T.predict_proba(model, frame))
    (tmp_path / "m/grid.json").unlink()
    assert T.load(str(tmp_path / "m")).grid_results == []
    with pytest.raises(PipelineError, match=r"/nothing/model\.joblib: not found \(run `dvc repro tfidf_svm`\)$"):
        T.load(tmp_path / "nothing")
    (tmp_path / "m/config.json").write_text(json.dumps({**asdict(model.config), "C": -1}))
    with pytest.raises(PipelineError, match=r"config\.json: tfidf_svm\.C = -1"):
        T.load(tmp_path / "m")

"""TF-IDF + classic classifiers on the tiny catalog: quality, probabilities, options, persistence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.classes import CLASS_CODES
from rakuten.contracts.model_files import check_proba
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.models import tfidf_svm
from tests.helpers.scoring import majority_weighted_f1, model_weighted_f1
from tests.helpers.stagerun import default_params, with_overrides
from tests.helpers.text_frames import text_model_frame


@pytest.fixture(scope="module")
def frames(tiny_split):
    frame = text_model_frame(tiny_split)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    held_out = frame[frame["split"].isin(["val", "test"])].reset_index(drop=True)
    return train, held_out


@pytest.fixture(scope="module")
def config():
    return parse_section(tfidf_svm.TfidfSvmConfig, default_params()["tfidf_svm"], "tfidf_svm")


@pytest.fixture(scope="module")
def svm(frames, config):
    return tfidf_svm.train(frames[0], None, config)


def test_svm_beats_the_majority_baseline_by_far(svm, frames):
    train, held_out = frames
    f1, baseline = model_weighted_f1(tfidf_svm, svm, held_out), majority_weighted_f1(train, held_out)
    assert f1 >= baseline + 0.4, (f1, baseline)


def test_probabilities_follow_the_contract(svm, frames):
    proba = tfidf_svm.predict_proba(svm, frames[1])
    check_proba(proba)
    assert proba.shape == (len(frames[1]), len(CLASS_CODES))
    assert np.allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"classifier": "rf", "rf": tfidf_svm.RandomForestConfig(n_estimators=30)},
        {"classifier": "sgd"},
        {"classifier": "logreg", "max_iter": 300},
        {"resample": "smote"},
        {"resample": "smote_under"},
        {"classifier": "sgd", "resample": "smote_under"},
    ],
)
def test_every_classifier_and_resampler_learns(frames, config, overrides):
    train, held_out = frames
    model = tfidf_svm.train(train, None, replace(config, **overrides))
    check_proba(tfidf_svm.predict_proba(model, held_out))
    assert model_weighted_f1(tfidf_svm, model, held_out) >= majority_weighted_f1(train, held_out) + 0.3


@pytest.mark.param_effect("tfidf_svm.C")
def test_c_changes_the_model(frames, config, svm):
    other = tfidf_svm.train(frames[0], None, replace(config, C=0.05))
    assert not np.allclose(tfidf_svm.predict_proba(other, frames[1]), tfidf_svm.predict_proba(svm, frames[1]))


@pytest.mark.param_effect("tfidf_svm.grid")
def test_grid_search_picks_from_the_grid(frames, config):
    # logistic regression: the tiny catalog's rarest class is too small to calibrate an SVM inside CV folds
    model = tfidf_svm.train(
        frames[0], None, replace(config, classifier="logreg", max_iter=300, grid={"C": [0.1, 1.0]}, grid_cv=2)
    )
    assert model.config.C in (0.1, 1.0) and model.config.grid == {}
    assert [r["C"] for r in model.grid_results] == [0.1, 1.0]
    assert all(0 < r["cv_weighted_f1"] <= 1 for r in model.grid_results)


def test_grid_values_set_nested_knobs_with_their_declared_type(config):
    cfg = replace(config, grid={"rf.n_estimators": (7, 9), "sgd.alpha": (1,)})
    chosen = tfidf_svm._with_values(cfg, {"rf.n_estimators": 7, "sgd.alpha": 1})
    assert chosen.rf.n_estimators == 7 and chosen.sgd.alpha == 1.0 and isinstance(chosen.sgd.alpha, float)
    assert chosen.grid == {} and chosen.rf.max_depth == config.rf.max_depth


def test_top_terms_are_readable_and_class_specific(svm, frames):
    table = tfidf_svm.top_terms(svm, frames[0], k=5)
    assert list(table.columns) == ["prdtypecode", "label", "rank", "term", "weight"]
    assert table.groupby("prdtypecode").size().max() == 5
    pool_terms = set(table[table["prdtypecode"] == 2583]["term"])
    assert pool_terms and all(t.strip() for t in pool_terms)


def test_top_terms_of_a_random_forest(frames, config):
    model = tfidf_svm.train(
        frames[0], None, replace(config, classifier="rf", rf=tfidf_svm.RandomForestConfig(n_estimators=20))
    )
    table = tfidf_svm.top_terms(model, frames[0], k=3)
    assert len(table) == 3 * frames[0]["prdtypecode"].nunique()


def test_save_load_round_trip(svm, frames, tmp_path):
    tfidf_svm.save(svm, tmp_path / "model")
    loaded = tfidf_svm.load(tmp_path / "model")
    assert loaded.config == svm.config
    assert np.allclose(tfidf_svm.predict_proba(loaded, frames[1]), tfidf_svm.predict_proba(svm, frames[1]))


def test_training_is_deterministic(frames, config, svm):
    again = tfidf_svm.train(frames[0], None, config)
    assert np.array_equal(tfidf_svm.predict_proba(again, frames[1]), tfidf_svm.predict_proba(svm, frames[1]))


def test_params_are_validated_with_the_key_name():
    params = default_params()
    for key, value, message in [
        ("tfidf_svm.C", 0, "tfidf_svm.C = 0"),
        ("tfidf_svm.classifier", "xgb", "tfidf_svm.classifier = 'xgb'"),
        ("tfidf_svm.resample", "adasyn", "tfidf_svm.resample"),
        ("tfidf_svm.grid", {"gamma": [1]}, "tfidf_svm.grid.gamma"),
        ("tfidf_svm.ngram_min", 3, "ngram_min = 3 > "),
    ]:
        with pytest.raises(PipelineError, match=message):
            parse_section(tfidf_svm.TfidfSvmConfig, with_overrides(params, {key: value})["tfidf_svm"], "tfidf_svm")


def test_too_small_class_for_calibration_is_one_line(frames, config):
    train = frames[0]
    rare = train[train["prdtypecode"] == train["prdtypecode"].value_counts().index[-1]].head(1)
    with pytest.raises(PipelineError, match="calibrating the SVM needs at least 2"):
        tfidf_svm.train(pd.concat([train[train["prdtypecode"] != rare["prdtypecode"].iloc[0]], rare]), None, config)


def test_missing_labels_are_one_line(frames, config):
    train = frames[0].copy()
    train["prdtypecode"] = train["prdtypecode"].astype("Int64")
    train.loc[0, "prdtypecode"] = None
    with pytest.raises(PipelineError, match="prdtypecode"):
        tfidf_svm.train(train, None, config)


def test_per_class_table_has_one_block_per_scored_split(svm, frames):
    from rakuten.contracts.model_files import proba_frame
    from rakuten.models.runner import per_class_table

    held_out = frames[1]
    table = per_class_table(proba_frame(held_out, tfidf_svm.predict_proba(svm, held_out)))
    assert list(table.columns) == ["split", "prdtypecode", "label", "precision", "recall", "f1", "support"]
    assert sorted(table["split"].unique()) == ["test", "val"] and len(table) == 2 * len(CLASS_CODES)


def test_stage_writes_the_contract_files(tmp_path, tiny_split):
    import json

    from tests.helpers.stagerun import run_stage_script
    from tests.helpers.text_frames import write_stage_inputs

    write_stage_inputs(tmp_path, tiny_split, text_model_frame(tiny_split))
    result = run_stage_script("tfidf_svm", tmp_path, {"tfidf_svm.n_jobs": 1})
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "reports/metrics/tfidf_svm.json").read_text())
    assert set(metrics["val"]) == {"weighted_f1", "macro_f1", "accuracy"} and "test" in metrics
    assert (tmp_path / "models/tfidf_svm/model.joblib").is_file()
    # the text cleaning it was trained on travels with the model (read back by `rakuten predict`)
    assert json.loads((tmp_path / "models/tfidf_svm/preprocessing.json").read_text()) == json.loads(
        (tmp_path / "data/processed/text_clean.json").read_text()
    )
    assert (tmp_path / "reports/top_terms/tfidf_svm.csv").is_file()
    assert (tmp_path / "reports/per_class/tfidf_svm.csv").is_file()
    probs = pd.read_parquet(tmp_path / "reports/probs/tfidf_svm.parquet")
    assert list(probs.columns[:3]) == ["row_id", "split", "prdtypecode"]
    check_proba(probs.filter(like="p_").to_numpy())
    assert set(probs["split"]) == {"val", "test", "official_test"}


def test_stage_bad_param_is_one_line(tmp_path):
    from tests.helpers.stagerun import error_lines, run_stage_script

    result = run_stage_script("tfidf_svm", tmp_path, {"tfidf_svm.classifier": "xgb"})
    assert result.returncode == 2 and error_lines(result) == [
        "error: params.yaml: tfidf_svm.classifier = 'xgb', expected one of svm, rf, sgd, logreg"
    ]

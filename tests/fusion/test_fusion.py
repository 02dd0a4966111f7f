"""Fusion strategies on constructed probability tables with known answers (tests/helpers/fusion_fakes.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from rakuten.contracts.classes import N_CLASSES, codes_to_indices
from rakuten.contracts.model_files import read_probs, split_scores
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.fusion import fusion, persistence, selection
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.meta import META_LEARNERS, MetaLearner, XgboostMeta
from rakuten.fusion.model import FusedModel, availability
from rakuten.fusion.strategies import STRATEGIES, MaxRule
from rakuten.fusion.weights import FittedSoftVote, SoftVote, weighted_f1
from tests.helpers.fusion_fakes import (
    ALL,
    FIRST_HALF,
    SECOND_HALF,
    make_tables,
    model_proba,
    small_config,
    write_stage_inputs,
)
from tests.helpers.stagerun import error_lines, run_stage_script

MODALITIES = ["text", "image"]


@pytest.fixture(scope="module")
def complementary():
    """Two models that each know half of the classes, and their fusion (fitted once per module)."""
    tables, _ = make_tables({"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF})
    result = fusion.fuse_tables(tables, MODALITIES, small_config(list(tables)))
    return tables, result


def test_complementary_models_fused_beat_both(complementary):
    tables, result = complementary
    single = max(split_scores(t)["test"]["weighted_f1"] for t in tables.values())
    assert single < 0.6
    test = result.comparison.set_index("strategy")["test_weighted_f1"]
    for strategy in ("max_rule", "soft_vote", "soft_vote_fit", "stacking_logreg", "stacking_linear_svm"):
        assert test[strategy] > single + 0.25, strategy
    assert split_scores(result.table)["test"]["weighted_f1"] > single + 0.25


def test_chosen_strategy_is_best_out_of_fold_on_val(complementary):
    _, result = complementary
    comp = result.comparison.set_index("strategy")
    assert comp["chosen"].sum() == 1
    assert comp.loc[result.model.strategy, "val_cv_weighted_f1"] == comp["val_cv_weighted_f1"].max()
    assert set(comp.index) == set(STRATEGIES)


def test_useless_model_gets_low_weight():
    y = np.repeat(np.arange(N_CLASSES), 15)
    good = model_proba(y, ALL, strength=2.5, seed=3)
    useless = model_proba(y, None, seed=4)
    vote = FittedSoftVote(step=0.1).fit([good, useless], y)
    assert vote.weights_[1] <= 0.2
    assert vote.weights_[0] >= 0.8


def test_fast_weighted_f1_equals_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 20, 300)  # some classes absent from y, some only predicted
    proba = rng.random((300, N_CLASSES))
    pred = proba.argmax(1)
    expected = f1_score(y, pred, labels=np.union1d(y, pred), average="weighted", zero_division=0)
    assert weighted_f1(y, proba) == pytest.approx(expected, abs=1e-12)


def test_max_rule_keeps_agreement_and_follows_most_confident_model():
    a = np.full((2, N_CLASSES), 0.5 / (N_CLASSES - 1))
    b = a.copy()
    a[0, 3] = b[0, 3] = 0.5  # agree on class 3
    a[1, 4], b[1, 7] = 0.5, 0.9  # disagree: b is more confident
    b[1] /= b[1].sum()
    out = MaxRule().predict_proba([a, b])
    assert out.argmax(1).tolist() == [3, 7]
    assert np.allclose(out.sum(1), 1)


def test_no_test_label_reaches_any_fit(monkeypatch):
    """By construction: fit_fusion only receives val rows, and corrupting every test label
    changes nothing that was fitted or chosen, only the reported test scores."""
    tables, _ = make_tables(
        {"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF, "camembert": ALL}, per_class=8, strength=2.0
    )
    seen = []
    real_fit = selection.fit_fusion

    def spy(val_probs, val_y, cfg, groups=None):
        seen.append((len(val_y), [p.copy() for p in val_probs]))
        return real_fit(val_probs, val_y, cfg, groups)

    monkeypatch.setattr(selection, "fit_fusion", spy)
    # every candidate strategy, not only the chosen one: each instance's fit is recorded
    fits = []
    real_factories = selection.strategy_factories

    def recording_factories(cfg):
        def record(name, make):
            def factory():
                strategy = make()
                real = strategy.fit

                def fit(probs, y):
                    fits.append((name, [np.asarray(p).copy() for p in probs], np.asarray(y).copy()))
                    return real(probs, y)

                strategy.fit = fit
                return strategy

            return factory

        return {name: record(name, make) for name, make in real_factories(cfg).items()}

    monkeypatch.setattr(selection, "strategy_factories", recording_factories)
    cfg = small_config(list(tables))
    clean = fusion.fuse_tables(tables, ["text", "image", "text"], cfg)
    corrupted = {}
    for name, t in tables.items():
        t = t.copy()
        test = t["split"] == "test"
        t.loc[test, "prdtypecode"] = t.loc[test, "prdtypecode"].to_numpy()[::-1]  # every test label moved
        corrupted[name] = t
    dirty = fusion.fuse_tables(corrupted, ["text", "image", "text"], cfg)

    n_val = int((tables["tfidf_svm"]["split"] == "val").sum())
    assert [n for n, _ in seen] == [n_val, n_val]
    # each strategy: one fit per CV fold (3) plus the final fit on all validation rows, per fuse_tables call;
    # every fitted row is a validation row (matched on its probabilities and label), never a test row
    rows, mats = fusion.align_tables(tables)
    val = (rows["split"] == "val").to_numpy()
    y_val = codes_to_indices(rows.loc[val, "prdtypecode"])
    val_rows = {tuple(np.concatenate([m[i] for m in mats]).round(12)): y for i, y in zip(np.flatnonzero(val), y_val)}
    assert sorted({name for name, _, _ in fits}) == sorted(STRATEGIES)
    for name in STRATEGIES:
        sizes = sorted(len(y) for n, _, y in fits if n == name)
        assert len(sizes) == 2 * 4 and sizes[-2:] == [n_val, n_val] and sum(sizes[:6]) == 2 * 2 * n_val, name
    for name, probs, y in fits:
        for i, label in enumerate(y):
            key = tuple(np.concatenate([p[i] for p in probs]).round(12))
            assert val_rows.get(key) == label, f"{name} fitted on a row that is not a validation row"
    # test labels only reach the reported scores: every strategy's test predictions are unchanged
    for pred in (clean.predictions, dirty.predictions):
        assert set(pred.loc[pred["split"] == "test", "strategy"]) == set(STRATEGIES)
    cols = ["row_id", "split", "strategy", "predicted"]
    pd.testing.assert_frame_equal(clean.predictions[cols], dirty.predictions[cols])
    assert clean.model.strategy == dirty.model.strategy
    proba_cols = [c for c in clean.table.columns if c.startswith("p_")]
    assert np.array_equal(clean.table[proba_cols].to_numpy(), dirty.table[proba_cols].to_numpy())
    val_cols = [c for c in clean.comparison.columns if c.startswith("val_cv_")]
    pd.testing.assert_frame_equal(clean.comparison[val_cols], dirty.comparison[val_cols])
    assert not clean.comparison["test_weighted_f1"].equals(dirty.comparison["test_weighted_f1"])


def test_meta_learner_answers_27_columns_when_classes_are_missing():
    rng = np.random.default_rng(0)
    x = rng.random((40, 54))
    for kind in META_LEARNERS:
        for classes in ([2, 9, 20], [5, 6], [11]):
            y = np.array(classes * 20)[:40]
            params = XgboostMeta(n_estimators=5) if kind == "xgboost" else None
            meta = MetaLearner(kind, params, seed=0).fit(x, y)
            p = meta.predict_proba(x)
            assert p.shape == (40, N_CLASSES)
            assert np.allclose(p.sum(1), 1)
            absent = np.setdiff1d(np.arange(N_CLASSES), classes)
            assert np.all(p[:, absent] == 0), (kind, classes)


def test_fallback_uses_only_available_models():
    y = np.arange(N_CLASSES)
    text, image = model_proba(y, ALL, seed=1), model_proba(y, ALL, seed=2)
    model = FusedModel(
        "stacking_logreg", ["tfidf_svm", "resnet50"], MODALITIES, SoftVote([0.5, 0.5]), np.array([0.7, 0.3])
    )
    text_ok = np.ones(N_CLASSES, bool)
    image_ok = np.ones(N_CLASSES, bool)
    image_ok[0], text_ok[1] = False, False
    text_ok[2] = image_ok[2] = False
    out = model.predict_proba([text, image], availability(MODALITIES, text_ok, image_ok))
    assert np.allclose(out[0], text[0])  # image missing: text model alone
    assert np.allclose(out[1], image[1])  # text empty: image model alone
    assert np.allclose(out[3], 0.5 * text[3] + 0.5 * image[3])
    assert np.allclose(out[2], 0.5 * text[2] + 0.5 * image[2])  # nothing available: all models as they are
    used = model.inputs_used(text_ok, image_ok)
    assert used[:4] == [
        "text only (image missing)",
        "image only (text empty)",
        "none (text empty, image missing): all models on blank input",
        "text+image",
    ]


def test_save_load_roundtrip(tmp_path, complementary):
    tables, result = complementary
    rows, mats = fusion.align_tables(tables)
    persistence.save(result.model, tmp_path / "fusion")
    loaded = persistence.load(tmp_path / "fusion")
    assert loaded.strategy == result.model.strategy
    assert np.array_equal(loaded.predict_proba(mats), result.model.predict_proba(mats))
    assert (tmp_path / "fusion" / "fusion.json").is_file()


def test_saved_classes_keep_their_pickled_module_and_load_in_a_fresh_process(tmp_path, complementary):
    """fusion.joblib names its classes ``rakuten.fusion.<Class>`` (fusion was one module when the committed
    models were saved): the file stays byte for byte what earlier runs wrote, and those files still load."""
    import re
    import subprocess
    import sys

    _, result = complementary
    persistence.save(result.model, tmp_path / "fusion")
    data = (tmp_path / "fusion" / "fusion.joblib").read_bytes()
    assert set(re.findall(rb"rakuten[\w.]*", data)) == {b"rakuten.fusion"}  # joblib's raw arrays follow the pickle
    code = f"from rakuten.fusion.persistence import load; print(type(load({str(tmp_path / 'fusion')!r})).__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "FusedModel", done.stderr[-2000:]


def test_misaligned_tables_are_one_clear_error():
    tables, _ = make_tables({"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF})
    tables["resnet50"] = tables["resnet50"].iloc[1:]
    with pytest.raises(PipelineError, match=r"resnet50\.parquet: row_id 5 missing .*dvc repro resnet50"):
        fusion.align_tables(tables)


def test_missing_table_names_the_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"dvc repro camembert.*fusion.models"):
        read_probs("camembert")


@pytest.mark.parametrize(
    "override, key",
    [
        ({"models": ["tfidf_svm", "bert"]}, "fusion.models"),
        ({"models": []}, "fusion.models"),
        ({"weights": {"tfidf_svm": 0, "fasttext": 0, "camembert": 0, "resnet50": 0, "joint": 0}}, "fusion.weights"),
        ({"strategy": "best"}, "fusion.strategy"),
        ({"weight_step": 0.3}, "fusion.weight_step"),
        ({"cv_folds": 1}, "fusion.cv_folds"),
        (
            {"xgboost": {"n_estimators": 0, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8}},
            "fusion.xgboost.n_estimators",
        ),
    ],
)
def test_params_are_validated_naming_the_key(override, key):
    from tests.helpers.stagerun import default_params

    section = {**default_params()["fusion"], **override}
    with pytest.raises(PipelineError, match=key.replace(".", r"\.")):
        parse_section(FusionConfig, section, "fusion")


def test_default_params_are_valid():
    from tests.helpers.stagerun import default_params

    cfg = parse_section(FusionConfig, default_params()["fusion"], "fusion")
    assert cfg.models == ("tfidf_svm", "fasttext", "camembert", "resnet50", "joint")
    # study: 0.6 text / 0.4 image, with joint (both inputs) counted half to each
    assert cfg.model_weights == [0.15, 0.15, 0.15, 0.25, 0.3]


FAST = {
    "fusion.models": ["tfidf_svm", "resnet50"],
    "fusion.cv_folds": 3,
    "fusion.xgboost.n_estimators": 10,
    "fusion.n_jobs": 1,
    "review.target_precision": 0.9,  # read by the stage (section review)
}


def test_stage_writes_its_outputs(tmp_path):
    tables, _ = make_tables({"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF})
    write_stage_inputs(tmp_path, tables, image_missing=(5,))
    result = run_stage_script("fusion", tmp_path, FAST)
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(tmp_path / "reports/probs/fusion.parquet")
    assert len(table) == len(tables["tfidf_svm"])
    assert (tmp_path / "models/fusion/fusion.joblib").is_file()
    report = __import__("json").loads((tmp_path / "reports/fusion.json").read_text())
    assert report["chosen"] in STRATEGIES and len(report["strategies"]) == len(STRATEGIES)
    preds = pd.read_parquet(tmp_path / "reports/fusion_predictions.parquet")
    assert set(preds["split"]) == {"val", "test"}
    # row 5 (val) has no image: its fused probabilities, before calibration, are the text model's alone
    uncalibrated = pd.read_parquet(tmp_path / "reports/fusion_uncalibrated.parquet")
    assert uncalibrated.columns.tolist() == table.columns.tolist() and len(uncalibrated) == len(table)
    row = uncalibrated[uncalibrated["row_id"] == 5].filter(like="p_").to_numpy()
    text_row = tables["tfidf_svm"][tables["tfidf_svm"]["row_id"] == 5].filter(like="p_").to_numpy()
    assert np.allclose(row, text_row, atol=1e-6)
    assert report["calibration"]["chosen"] in ("none", "temperature", "vector_scaling")
    assert [c["method"] for c in report["calibration"]["candidates"]] == ["none", "temperature", "vector_scaling"]
    assert report["review"]["target_precision"] == 0.9 and report["review"]["threshold"] == report["review_threshold"]


def test_stage_missing_table_is_one_line(tmp_path):
    tables, _ = make_tables({"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF})
    write_stage_inputs(tmp_path, tables)
    result = run_stage_script("fusion", tmp_path, {**FAST, "fusion.models": ["tfidf_svm", "camembert"]})
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "dvc repro camembert" in lines[0]
    assert "Traceback" not in result.stderr


def test_labels_use_canonical_indices(complementary):
    tables, result = complementary
    val = result.predictions[(result.predictions["split"] == "val") & (result.predictions["strategy"] == "max_rule")]
    codes_to_indices(val["predicted"])  # every predicted value is one of the 27 codes
    assert len(val) == int((tables["tfidf_svm"]["split"] == "val").sum())

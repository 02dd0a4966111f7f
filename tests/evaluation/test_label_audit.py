"""The label audit: out-of-fold probabilities that never come from a model that saw the row, pooling over
views, cleanlab's flags, the score against the right ground truth, and the training split's policy."""

from __future__ import annotations

import inspect
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import pytest

from rakuten.contracts import embeddings
from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, codes_to_indices
from rakuten.contracts.model_files import TRAINING_SPLIT
from rakuten.core.config import defaults, parse_section
from rakuten.core.errors import PipelineError
from rakuten.evaluation.label_audit import audit, crossfit, image_features, issues, truth
from rakuten.evaluation.label_audit.config import VIEWS, LabelAuditConfig
from rakuten.models import fasttext, runner, tfidf_svm
from rakuten.models.resnet50.frame import load_image_frame

CODES = np.array(CLASS_CODES)


def _rows(n: int = 270, group_size: int = 3) -> pd.DataFrame:
    """Train rows of every class, in duplicate groups of ``group_size``; row ids apart from positions."""
    return pd.DataFrame({"row_id": np.arange(1000, 1000 + n), "prdtypecode": CODES[np.arange(n) % N_CLASSES]}).assign(
        group_id=lambda f: (f["row_id"] - 1000) // group_size
    )


def _memoriser(key: str):
    """A model that recites the label of every training row sharing ``key`` and knows nothing else."""

    def fit(train: pd.DataFrame, held: pd.DataFrame) -> np.ndarray:
        assert "prdtypecode" not in held.columns, "a held-out row reached the model with its label"
        seen = dict(zip(train[key], codes_to_indices(train["prdtypecode"])))
        out = np.full((len(held), N_CLASSES), 1 / N_CLASSES)
        for i, value in enumerate(held[key]):
            if value in seen:
                out[i] = np.eye(N_CLASSES)[seen[value]]
        return out

    return fit


def test_out_of_fold_probabilities_never_come_from_a_model_that_saw_the_row_or_its_duplicates():
    frame = _rows()
    probs, fold = crossfit.out_of_fold(frame, {"row": _memoriser("row_id"), "group": _memoriser("group_id")}, 5, 0)
    assert np.allclose(probs["row"], 1 / N_CLASSES), "a row was predicted by a model trained on it"
    assert np.allclose(probs["group"], 1 / N_CLASSES), "a duplicate of the row trained its model"
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]
    assert (frame.groupby("group_id")["row_id"].transform(lambda r: fold[r - 1000].min() == fold[r - 1000].max())).all()


def test_each_held_out_row_gets_its_own_prediction():
    """The probabilities land on the rows they were computed for (a hint column names each row's class)."""
    frame = _rows().assign(hint=lambda f: codes_to_indices(f["prdtypecode"])[::-1])

    def from_hint(train, held):
        return np.eye(N_CLASSES)[held["hint"].to_numpy()]

    probs, _ = crossfit.out_of_fold(frame, {"hint": from_hint}, 4, 0)
    assert np.array_equal(probs["hint"].argmax(axis=1), frame["hint"].to_numpy())


@pytest.mark.param_effect("label_audit.folds", "label_audit.seed")
def test_folds_and_seed_change_the_folds_and_the_probabilities():
    frame = _rows(540, group_size=2)
    labels, groups = frame["prdtypecode"].to_numpy(), frame["group_id"].to_numpy()
    five, three, other = (crossfit.assign_folds(labels, groups, k, s) for k, s in ((5, 0), (3, 0), (5, 1)))
    assert len(set(five.tolist())) == 5 and len(set(three.tolist())) == 3
    assert not np.array_equal(five, other)

    def prior(train, held):  # the class shares of the rows fitted on: depends on which rows they are
        counts = np.bincount(codes_to_indices(train["prdtypecode"]), minlength=N_CLASSES)
        return np.tile(counts / counts.sum(), (len(held), 1))

    a, _ = crossfit.out_of_fold(frame, {"prior": prior}, 5, 0)
    b, _ = crossfit.out_of_fold(frame, {"prior": prior}, 3, 0)
    assert not np.allclose(a["prior"], b["prior"])
    with pytest.raises(PipelineError, match=r"label_audit\.folds = 200, expected at most the 3 duplicate groups"):
        crossfit.assign_folds(labels[:9], np.arange(9) // 3, 200, 0)


@pytest.mark.param_effect("label_audit.pooling")
def test_geometric_pooling_needs_every_view_behind_the_other_class():
    """A hard row: its text points to a neighbour (B), its photo to its label (A). The mean of the views
    suggests B, the geometric pooling keeps A; two text models count as one view."""
    text = np.zeros((1, N_CLASSES))
    text[0, :2] = [0.05, 0.95]
    image = np.full((1, N_CLASSES), 0.08 / (N_CLASSES - 2))
    image[0, :2] = [0.9, 0.02]
    mean = crossfit.pool({"text": text, "image": image}, "mean")
    geometric = crossfit.pool({"text": text, "image": image}, "geometric")
    assert mean.argmax() == 1 and geometric.argmax() == 0
    assert np.allclose(geometric.sum(axis=1), 1)
    expected = np.sqrt((text + crossfit.FLOOR) * (image + crossfit.FLOOR))
    assert np.allclose(geometric, expected / expected.sum())
    rng = np.random.default_rng(0)
    p, q, r = (rng.dirichlet(np.ones(N_CLASSES), 4) for _ in range(3))
    by_view = crossfit.pool({"tfidf_svm": p, "fasttext": q, "image_features": r}, "geometric", VIEWS)
    assert np.allclose(by_view, crossfit.pool({"text": (p + q) / 2, "image": r}, "geometric"))
    assert not np.allclose(by_view, crossfit.pool({"a": p, "b": q, "c": r}, "geometric"))


def _confident_probs(given: np.ndarray, true: np.ndarray, seed: int = 0) -> np.ndarray:
    """Probabilities confident in the true class (0.6-0.9; 0.95 where the label was switched, so cleanlab's
    per-class thresholds count every switch), the rest spread at random."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(N_CLASSES), len(given)) * 0.1
    top = np.where(given == true, rng.uniform(0.6, 0.9, len(given)), 0.95)
    probs[np.arange(len(given)), codes_to_indices(true)] += top
    return probs / probs.sum(axis=1, keepdims=True)


def test_switched_labels_are_flagged_with_their_true_class_suggested():
    true = CODES[np.arange(540) % N_CLASSES]
    given = true.copy()
    switched = np.arange(3, 540, 37)
    given[switched] = CODES[(codes_to_indices(true[switched]) + 1) % N_CLASSES]
    probs = _confident_probs(given, true)
    flagged, score = issues.find_issues(given, probs, "low_self_confidence")
    assert sorted(flagged.tolist()) == switched.tolist()
    assert np.allclose(score, probs[np.arange(540), codes_to_indices(given)]), "score = p(given label)"
    row_ids = np.arange(540)[::-1] + 7
    table = issues.issue_table(row_ids, given, probs, score, flagged)
    assert list(table.columns) == ["row_id", "given", "suggested", "score"]
    assert sorted(table["row_id"]) == sorted(row_ids[switched].tolist())
    by_row = table.set_index("row_id")
    for i in switched:
        assert by_row.at[row_ids[i], "given"] == given[i] and by_row.at[row_ids[i], "suggested"] == true[i]
    assert list(table.itertuples(index=False)) == sorted(table.itertuples(index=False), key=lambda r: (r[3], r[0]))


@pytest.mark.param_effect("label_audit.filter_by")
def test_filter_by_changes_which_rows_are_flagged():
    true = CODES[np.arange(540) % N_CLASSES]
    probs = _confident_probs(true, true, seed=1)
    unsure = np.arange(5, 540, 9)  # the model hesitates between the label and another class
    probs[unsure] = 0.01 / (N_CLASSES - 2)
    probs[unsure, codes_to_indices(true[unsure])] = 0.48
    probs[unsure, (codes_to_indices(true[unsure]) + 1) % N_CLASSES] = 0.51
    neq, _ = issues.find_issues(true, probs, "predicted_neq_given")
    low, _ = issues.find_issues(true, probs, "low_self_confidence")
    assert sorted(neq.tolist()) == unsure.tolist()
    assert set(low.tolist()) != set(neq.tolist())


def test_flags_are_scored_against_the_planted_rows_of_the_train_split_only():
    """defects.json names rows by X index (orig_index); the audit saw only train rows 0-5, so planted row
    107 (row_id 7, in val) is no miss; counting it, or reading X indices as row ids, changes every figure."""
    catalog = pd.DataFrame(
        {
            "row_id": np.arange(12),
            "orig_index": [*range(100, 110), 0, 1],
            "is_official_test": [False] * 10 + [True] * 2,
        }
    )
    defects = {"label_noise": [{"row": r, "true": 10 + r, "given": 20 + r} for r in (101, 103, 105, 107)]}
    planted = truth.planted_noise(defects, catalog)
    assert planted["row_id"].tolist() == [1, 3, 5, 7] and planted["true"].tolist() == [111, 113, 115, 117]
    flagged = pd.DataFrame({"row_id": [1, 3, 4], "suggested": [111, 50, 60]})
    scored = truth.score_flags(flagged, planted, audited_row_ids=range(6))
    assert scored == {
        "planted_rows_audited": 3,
        "planted_rows_total": 4,
        "true_positives": 2,
        "precision": round(2 / 3, 6),
        "recall": round(2 / 3, 6),
        "f1": round(2 / 3, 6),
        "suggested_is_true_label": 1,
    }
    everything = truth.score_flags(flagged, planted, audited_row_ids=range(12))
    assert everything["recall"] == 0.5, "the wrong ground truth must show in the recall"
    assert truth.score_flags(flagged.iloc[:0], planted, range(6))["precision"] == 0.0
    with pytest.raises(PipelineError, match=r"defects\.json: missing key label_noise; .*dvc repro sample"):
        truth.planted_noise({}, catalog)
    with pytest.raises(PipelineError, match=r"label_noise row 110 is not a labelled row"):
        truth.planted_noise({"label_noise": [{"row": 110, "true": 10, "given": 40}]}, catalog)


@pytest.mark.param_effect("label_audit.label_noise")
def test_label_noise_keep_leaves_the_split_and_drop_removes_exactly_the_flagged_train_rows():
    split = pd.DataFrame(
        {
            "row_id": np.arange(6),
            "split": ["train", "train", "val", "test", "official_test", "train"],
            "group_id": [0, 1, 2, 3, 4, 5],
        }
    )
    flagged = [0, 2, 5]
    pd.testing.assert_frame_equal(issues.training_split(split, flagged, "keep"), split)
    dropped = issues.training_split(split, flagged, "drop")
    assert dropped["split"].tolist() == ["dropped", "train", "val", "test", "official_test", "dropped"]
    assert dropped.drop(columns="split").equals(split.drop(columns="split"))
    assert split["split"].tolist()[0] == "train", "the input is left alone"


def test_every_model_stage_reads_the_training_split():
    assert runner.SPLIT == TRAINING_SPLIT
    assert inspect.signature(runner.load_text_frame).parameters["split"].default == TRAINING_SPLIT
    assert inspect.signature(load_image_frame).parameters["split"].default == TRAINING_SPLIT
    assert inspect.signature(embeddings.load_rows).parameters["split"].default == TRAINING_SPLIT


def _text_frame(per_class: int = 12) -> pd.DataFrame:
    """Rows whose text names their class with two words of its own, plus a shared filler word."""
    n = per_class * N_CLASSES
    codes = CODES[np.arange(n) % N_CLASSES]
    text = [f"mot{c}a mot{c}b commun" for c in codes]
    return pd.DataFrame({"row_id": np.arange(n), "prdtypecode": codes, "group_id": np.arange(n), "text_norm": text})


FOLDS_SCRIPT = """
import rakuten  # first, as the stage script does: the numeric policy pins BLAS before numpy loads
from dataclasses import replace
import numpy as np
from rakuten.evaluation.label_audit import audit, crossfit
from rakuten.models import tfidf_svm
from tests.evaluation.test_label_audit import _text_frame, defaults_of

frame = _text_frame()
# tfidf_svm.n_jobs 2: in-process its calibration folds run in joblib processes, in a pool worker sequentially
fit = audit.fitters(("tfidf_svm",), {"tfidf_svm": replace(defaults_of(tfidf_svm.TfidfSvmConfig), n_jobs=2)})
alone, fold = crossfit.out_of_fold(frame, fit, 3, 0, n_jobs=1, min_pool_rows=0)
shared, fold2 = crossfit.out_of_fold(frame, fit, 3, 0, n_jobs=2, min_pool_rows=0)
assert np.array_equal(fold, fold2)
assert np.array_equal(shared["tfidf_svm"], alone["tfidf_svm"]) and alone["tfidf_svm"].any()
print("same bits")
"""


@pytest.mark.slow
def test_folds_fitted_in_worker_processes_give_the_in_process_bits():
    """label_audit.n_jobs is a runtime knob: the folds fitted side by side in spawned processes give the same
    out-of-fold probabilities as one process, and the pool ends with its folds (a model's joblib workers
    once held a pool worker for loky's 300 s idle timeout: the timeout below catches that). Run in a fresh
    interpreter that imports rakuten first, as the stage does (this test process loaded numpy before the
    numeric policy pinned its BLAS)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", FOLDS_SCRIPT], cwd=root, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip() == "same bits", done.stderr[-2000:]


@pytest.mark.param_effect("label_audit.models")
def test_models_choose_who_is_cross_fitted():
    frame = _text_frame()
    configs = {
        "tfidf_svm": replace(defaults_of(tfidf_svm.TfidfSvmConfig), n_jobs=1),
        "fasttext": replace(defaults_of(fasttext.FastTextConfig), epoch=5, bucket=1000, dim=10),
    }
    cfg = LabelAuditConfig(models=("tfidf_svm",), folds=3)
    one = audit.run_audit(frame, cfg, audit.fitters(cfg.models, configs))
    both_cfg = replace(cfg, models=("tfidf_svm", "fasttext"))
    both = audit.run_audit(frame, both_cfg, audit.fitters(both_cfg.models, configs))
    assert set(one.figures["oof_weighted_f1"]) == {"tfidf_svm", "pooled"}
    assert set(both.figures["oof_weighted_f1"]) == {"tfidf_svm", "fasttext", "pooled"}
    assert not np.allclose(one.pooled, both.pooled)
    assert one.figures["rows_audited"] == len(frame) and one.figures["oof_weighted_f1"]["tfidf_svm"] > 0.9
    with pytest.raises(PipelineError, match="no params section parsed for fasttext"):
        audit.fitters(("fasttext",), {})


def defaults_of(cls):
    return parse_section(cls, defaults(cls), "x")


def _product(path, hue: int, rng: np.random.Generator, round_shape: bool) -> None:
    img = np.full((64, 64, 3), int(rng.integers(120, 200)), np.uint8)
    colour = cv2.cvtColor(np.uint8([[[hue + int(rng.integers(-3, 4)), 200, 200]]]), cv2.COLOR_HSV2BGR)[0, 0]
    colour = tuple(int(v) for v in colour)
    if round_shape:
        cv2.circle(img, (32, 32), int(rng.integers(16, 22)), colour, -1)
    else:
        cv2.rectangle(img, (12, 16), (52, 48), colour, -1)
    cv2.imwrite(str(path), img)


def test_image_features_tell_products_apart_and_mark_missing_images(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    paths, codes = [], []
    for i in range(60):
        code = CODES[i % 2]
        _product(tmp_path / f"{i}.jpg", 20 if code == CODES[0] else 110, rng, round_shape=code == CODES[0])
        paths.append(f"{i}.jpg")
        codes.append(code)
    readable = np.ones(62, bool)
    readable[60] = False  # image_clean could not read it
    matrix = image_features.feature_matrix([*paths, "60.jpg", "absent.jpg"], readable, tmp_path)
    assert matrix.shape == (62, image_features.N_FEATURES)
    assert (matrix[:60, -1] == 0).all() and (matrix[60:, -1] == 1).all() and not matrix[60:, :-1].any()
    monkeypatch.setattr(image_features, "CHUNK", 16)  # 4 chunks over 2 processes, back in input order
    pooled = image_features.feature_matrix([*paths, "60.jpg", "absent.jpg"], readable, tmp_path, n_jobs=2)
    assert np.array_equal(pooled, matrix)
    frame = pd.DataFrame({"prdtypecode": codes, image_features.FEATURES: list(matrix[:60])})
    model = image_features.train(frame.iloc[:40])
    probs = image_features.predict_proba(model, frame.iloc[40:])
    assert probs.shape == (20, N_CLASSES) and np.allclose(probs.sum(axis=1), 1)
    assert (probs.argmax(axis=1) == codes_to_indices(frame["prdtypecode"].iloc[40:])).all()


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("models", ["resnet50"], "label_audit.models"),
        ("models", ["tfidf_svm", "tfidf_svm"], "label_audit.models"),
        ("models", [], "label_audit.models"),
        ("folds", 1, "label_audit.folds = 1"),
        ("label_noise", "maybe", "label_audit.label_noise = 'maybe'"),
        ("filter_by", "all", "label_audit.filter_by = 'all'"),
        ("pooling", "max", "label_audit.pooling = 'max'"),
    ],
)
def test_bad_config_is_one_line(key, value, needle):
    with pytest.raises(PipelineError) as err:
        parse_section(LabelAuditConfig, {**defaults(LabelAuditConfig), key: value}, "label_audit")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_stage_flags_scores_against_the_planted_noise_and_drops_the_flagged_train_rows(
    tiny_sample, tiny_split, tmp_path
):
    """The stage end to end on the tiny sample with 5% planted noise: the three outputs, the ground truth
    counted over the train rows only, and with ``drop`` exactly the flagged rows leave train."""
    import json

    from rakuten.data.sample.noise import plant_label_noise
    from tests.helpers.stagerun import error_lines, run_stage_script
    from tests.helpers.text_frames import text_model_frame, write_stage_inputs

    defects = json.loads((tiny_sample / "defects.json").read_text())
    labelled = tiny_split[~tiny_split["is_official_test"]].sort_values("orig_index")
    duplicated = {row for pair in defects["duplicate_texts"] for row in pair}
    given, defects["label_noise"] = plant_label_noise(
        labelled["prdtypecode"].to_numpy(), len(labelled), 0.05, 3, duplicated
    )
    noisy = tiny_split.copy()
    noisy.loc[labelled.index, "prdtypecode"] = given[labelled["orig_index"].to_numpy()]
    write_stage_inputs(tmp_path, noisy, text_model_frame(tiny_split))
    tiny_split.rename(columns={"image_path": "clean_path", "image_ok": "readable"})[
        ["row_id", "clean_path", "readable"]
    ].to_parquet(tmp_path / "data/processed/image_quality.parquet", index=False)
    (tmp_path / "data/sample").mkdir(parents=True)
    (tmp_path / "data/sample/defects.json").write_text(json.dumps(defects))
    section = {**defaults(LabelAuditConfig), "label_noise": "drop", "folds": 3}
    fast = {"label_audit": section, "tfidf_svm.n_jobs": 1, "fasttext.epoch": 20, "fasttext.bucket": 20000}
    result = run_stage_script("label_audit", tmp_path, fast)
    assert result.returncode == 0, result.stderr[-2000:]
    flagged = pd.read_csv(tmp_path / "reports/label_issues.csv")
    figures = json.loads((tmp_path / "reports/label_audit.json").read_text())
    split = pd.read_parquet(tmp_path / "data/interim/split.parquet")
    training = pd.read_parquet(tmp_path / TRAINING_SPLIT)
    train_ids = set(split.loc[split["split"] == "train", "row_id"])
    assert list(flagged.columns) == ["row_id", "given", "suggested", "score"] and len(flagged) == figures["flagged"]
    assert set(flagged["row_id"]) <= train_ids and figures["rows_audited"] == len(train_ids)
    assert set(training.loc[training["split"] == "dropped", "row_id"]) == set(flagged["row_id"])
    assert figures["rows_dropped"] == len(flagged)
    unchanged = training["split"] != "dropped"
    assert training[unchanged].equals(split[unchanged]) and training["group_id"].equals(split["group_id"])
    planted = defects["label_noise"]
    orig = tiny_split[~tiny_split["is_official_test"]].set_index("orig_index")
    in_train = [r for r in planted if orig.at[r["row"], "row_id"] in train_ids]
    assert 0 < len(in_train) < len(planted)
    hits = set(flagged["row_id"]) & {orig.at[r["row"], "row_id"] for r in in_train}
    assert figures["ground_truth"]["planted_rows_audited"] == len(in_train)
    assert figures["ground_truth"]["true_positives"] == len(hits)
    assert figures["ground_truth"]["recall"] == round(len(hits) / len(in_train), 6)
    failed = run_stage_script("label_audit", tmp_path / "bad", {"label_audit": {**section, "folds": 0}})
    assert failed.returncode == 2 and error_lines(failed) == [
        "error: params.yaml: label_audit.folds = 0, expected an integer in [2, 50]"
    ]


def test_a_class_too_rare_to_fit_sits_the_fit_out_but_its_rows_are_still_predicted(monkeypatch):
    frame = pd.DataFrame({"prdtypecode": [10, 10, 40, 50, 50, 50], "row_id": range(6)})
    seen = []

    class Probe:
        @staticmethod
        def train(train, val, cfg):
            seen.append(train)

        @staticmethod
        def predict_proba(model, held):
            return np.full((len(held), N_CLASSES), 1 / N_CLASSES)

    monkeypatch.setitem(audit.MODULES, "probe", Probe)
    out = audit.fitters(("probe",), {"probe": None})["probe"](frame, frame.drop(columns="prdtypecode"))
    assert out.shape == (6, N_CLASSES), "every held-out row is predicted, the rare class's too"
    assert seen[0]["prdtypecode"].tolist() == [10, 10, 50, 50, 50], "class 40 (1 row) sits the fit out"
    assert set(audit.fitters(("image_features",), {})) == {"image_features"}  # it has no params section

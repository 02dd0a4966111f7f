"""Submission file (challenge format) and the prediction helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS, N_CLASSES
from rakuten.core.errors import PipelineError
from rakuten.data.ingest import catalog_rows
from rakuten.fusion import fusion, persistence
from rakuten.serving.predict import prediction_table
from rakuten.serving.submission import official_submission, submission_frame
from tests.helpers.fusion_fakes import (
    ALL,
    FIRST_HALF,
    SECOND_HALF,
    make_tables,
    model_proba,
    small_config,
    write_stage_inputs,
)
from tests.helpers.stagerun import error_lines, record_outputs, run_stage_script

SPEC = {"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF}


@pytest.fixture(scope="module")
def fitted():
    tables, _ = make_tables(SPEC, per_class=6)
    result = fusion.fuse_tables(tables, ["text", "image"], small_config(list(tables)))
    return tables, result.model


def _catalog(tables) -> pd.DataFrame:
    t = next(iter(tables.values()))
    return pd.DataFrame(
        {"row_id": t["row_id"], "orig_index": t["row_id"] + 84916, "is_official_test": t["split"] == "official_test"}
    )


def test_submission_frame_is_the_challenge_format(tmp_path):
    official = pd.DataFrame({"orig_index": [84918, 84916, 84917]})
    proba = np.eye(N_CLASSES)[[0, 5, 26]]
    sub = submission_frame(official, proba)
    path = tmp_path / "submission.csv"
    sub.to_csv(path, index=True)
    lines = path.read_text().splitlines()
    assert lines[0] == ",prdtypecode"
    assert lines[1:] == [f"84916,{CLASS_CODES[5]}", f"84917,{CLASS_CODES[26]}", f"84918,{CLASS_CODES[0]}"]
    with pytest.raises(PipelineError, match="3 official test rows but 2 predictions"):
        submission_frame(official, proba[:2])


def test_official_submission_has_one_row_per_x_test_row(fitted):
    tables, model = fitted
    catalog = _catalog(tables)
    sub, report = official_submission(catalog, model, tables)
    official = catalog[catalog["is_official_test"]]
    assert len(sub) == len(official) == report["rows_submitted"] == report["rows_official_test"]
    assert sorted(sub.index) == sorted(official["orig_index"])
    assert sub["prdtypecode"].isin(CLASS_CODES).all()


def test_missing_official_row_names_model_and_index(fitted):
    tables, model = fitted
    catalog = _catalog(tables)
    broken = dict(tables)
    last = tables["resnet50"][tables["resnet50"]["split"] == "official_test"].index[-1]
    broken["resnet50"] = tables["resnet50"].drop(index=last)
    row_id = int(tables["resnet50"].loc[last, "row_id"])
    with pytest.raises(
        PipelineError,
        match=rf"resnet50\.parquet: no official_test row for row_id {row_id} "
        rf"\(X_test index {row_id + 84916}\)",
    ):
        official_submission(catalog, model, broken)


def test_prediction_table_top3_sorted_with_labels():
    y = np.arange(5)
    proba = model_proba(y, ALL, seed=0)[:5]
    out = prediction_table(np.array([7, 8, 9, 10, 11]), proba, ["text+image"] * 5)
    assert list(out.index) == [7, 8, 9, 10, 11]
    assert (out["top1_proba"] >= out["top2_proba"]).all() and (out["top2_proba"] >= out["top3_proba"]).all()
    assert (out["prdtypecode"] == out["top1_code"]).all()
    assert [CLASS_LABELS[c] for c in out["prdtypecode"]] == out["label"].tolist()
    assert out["prdtypecode"].tolist() == [CLASS_CODES[i] for i in proba.argmax(1)]
    assert out.columns[-2:].tolist() == ["inputs_used", "needs_review"]
    assert out["needs_review"].dtype == bool and not out["needs_review"].any()  # no flags given: none to review
    flagged = prediction_table(np.arange(5), proba, ["text+image"] * 5, needs_review=np.array([1, 0, 0, 1, 0]))
    assert flagged["needs_review"].tolist() == [True, False, False, True, False]


def test_official_submission_keeps_its_format_with_a_calibrated_model(fitted):
    """The fused model is calibrated (vector scaling may move an argmax): the submission is still the argmax
    of what the model predicts, in the challenge's two columns."""
    tables, model = fitted
    assert model.calibrator is not None and model.review_threshold is not None
    sub, _ = official_submission(_catalog(tables), model, tables)
    assert sub.columns.tolist() == ["prdtypecode"] and sub.index.name is None
    official = tables["tfidf_svm"][tables["tfidf_svm"]["split"] == "official_test"].sort_values("row_id")
    mats = [
        t.set_index("row_id").loc[official["row_id"], [c for c in t.columns if c.startswith("p_")]].to_numpy()
        for t in (tables[m] for m in model.models)
    ]
    expected = np.asarray(CLASS_CODES)[model.predict_proba(mats).argmax(1)]
    assert sub.loc[official["row_id"] + 84916, "prdtypecode"].tolist() == expected.tolist()


def test_catalog_rows_flags_missing_images(tmp_path):
    """New products go through ingest's own conversion (rakuten.data.ingest.catalog_rows)."""
    (tmp_path / "image_2_product_20.jpg").write_bytes(
        cv2.imencode(".jpg", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    )
    x = pd.DataFrame(
        {"designation": ["a", None], "description": [None, "d"], "productid": ["20", "21"], "imageid": ["2", "3"]},
        index=[100, 101],
    )
    rows, status = catalog_rows(x, tmp_path / "X_new.csv", tmp_path)
    assert rows["image_ok"].tolist() == [True, False] and status.tolist() == ["ok", "missing"]
    assert rows["orig_index"].tolist() == [100, 101] and rows["row_id"].tolist() == [0, 1]
    assert rows["designation"].tolist() == ["a", ""] and rows["description"].isna().tolist() == [True, False]
    assert rows["prdtypecode"].isna().all() and rows["is_official_test"].all()
    assert rows["image_path"].iloc[0] == (tmp_path / "image_2_product_20.jpg").as_posix()
    x.loc[101, "imageid"] = "3.5"
    with pytest.raises(PipelineError, match=r"X_new\.csv: row 101, column imageid"):
        catalog_rows(x, tmp_path / "X_new.csv", tmp_path)


def test_ingest_and_predict_build_the_same_rows(tiny_sample, tiny_catalog):
    """The official X_test rows read as new products equal the catalog's rows (row ids aside)."""
    from rakuten.data.ingest import X_COLUMNS, X_TEST, read_official_csv

    x = read_official_csv(tiny_sample / X_TEST, X_COLUMNS)
    rows, _ = catalog_rows(x, tiny_sample / X_TEST, tiny_sample / "images" / "image_test")
    official = tiny_catalog[tiny_catalog["is_official_test"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows.drop(columns="row_id"), official.drop(columns="row_id"))


def test_predict_stage_writes_submission(tmp_path, fitted):
    tables, model = fitted
    write_stage_inputs(tmp_path, tables)
    persistence.save(model, tmp_path / "models/fusion")
    record_outputs(tmp_path, "models/fusion")  # the stage loads only what dvc.lock records
    result = run_stage_script("submission", tmp_path)
    assert result.returncode == 0, result.stderr
    sub = pd.read_csv(tmp_path / "reports/submission.csv", index_col=0)
    catalog = pd.read_parquet(tmp_path / "data/interim/catalog.parquet")
    official = catalog[catalog["is_official_test"]]
    assert list(sub.columns) == ["prdtypecode"]
    assert len(sub) == len(official) and set(sub.index) == set(official["orig_index"])
    assert sub["prdtypecode"].isin(CLASS_CODES).all()


def test_predict_stage_without_fused_model_is_one_line(tmp_path):
    tables, _ = make_tables(SPEC, per_class=2)
    write_stage_inputs(tmp_path, tables)
    result = run_stage_script("submission", tmp_path)
    assert result.returncode == 2
    assert error_lines(result) == ["error: models/fusion: trained model not found; run `dvc repro` (or `dvc pull`)"]

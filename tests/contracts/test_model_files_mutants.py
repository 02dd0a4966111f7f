"""The model contract (probability tables and metrics files) on hand-made tables (docs/mutation.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts import model_files as C
from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, PROBA_COLUMNS
from rakuten.core.errors import PipelineError

K = N_CLASSES


def uniform(n: int) -> np.ndarray:
    return np.full((n, K), 1.0 / K)


def test_paths():
    assert C.probs_path("fasttext") == Path("reports/probs/fasttext.parquet")
    assert C.metrics_path("fasttext") == Path("reports/metrics/fasttext.json")


def test_check_proba_accepts_valid_and_returns_float64():
    ints = np.zeros((2, K), dtype=np.int64)
    ints[:, 3] = 1
    out = C.check_proba(ints)
    assert out.dtype == np.float64 and out[:, 3].tolist() == [1.0, 1.0]
    ok = uniform(3)
    ok[0, 0] += 5e-5  # within the default tolerance 1e-4
    C.check_proba(ok)
    tiny_negative = uniform(1)
    tiny_negative[0, 0], tiny_negative[0, 1] = -1e-10, tiny_negative[0, 1] + tiny_negative[0, 0] + 1e-10
    C.check_proba(tiny_negative)  # rounding noise below -1e-9 is tolerated


def test_check_proba_messages():
    with pytest.raises(ValueError, match=r"^probabilities: expected shape \(n, 27\), got \(27,\)$"):
        C.check_proba(np.full(K, 1 / K))
    with pytest.raises(ValueError, match=r"^m: expected shape \(n, 27\), got \(2, 26\)$"):
        C.check_proba(np.full((2, 26), 1 / 26), name="m")
    bad = uniform(2)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"^probabilities: probabilities must be finite and non-negative$"):
        C.check_proba(bad)
    neg = uniform(2)
    neg[0, 0], neg[0, 1] = -0.01, neg[0, 1] + 1 / K + 0.01
    with pytest.raises(ValueError, match=r"^x: probabilities must be finite and non-negative$"):
        C.check_proba(neg, name="x")
    off = uniform(3)
    off[2] *= 1.01
    with pytest.raises(ValueError, match=r"^probabilities: row 2 sums to 1\.010000, expected 1$"):
        C.check_proba(off)
    C.check_proba(off, atol=0.02)
    far = uniform(1)
    far[0, 0] += 2e-4
    with pytest.raises(ValueError, match=r"row 0 sums to 1\.000200"):
        C.check_proba(far)
    low = uniform(1)
    low[0, 0] -= 2e-4
    with pytest.raises(ValueError, match=r"row 0 sums to 0\.999800"):
        C.check_proba(low)


def test_as_stored_is_float32():
    out = C.as_stored(np.array([[0.1, 0.9]]))
    assert out.dtype == np.float32 and out.tolist() == [[np.float32(0.1), np.float32(0.9)]]


def test_proba_frame_columns_types_and_values():
    rows = pd.DataFrame(
        {
            "row_id": [4.0, 2.0, 9.0],
            "split": pd.Categorical(["val", "test", "official_test"]),
            "prdtypecode": [10, 2905, None],
        }
    )
    proba = np.zeros((3, K))
    proba[[0, 1, 2], [0, 26, 5]] = 1.0
    table = C.proba_frame(rows, proba)
    assert table.columns.tolist() == ["row_id", "split", "prdtypecode", *PROBA_COLUMNS]
    assert table["row_id"].dtype == np.int64 and table["row_id"].tolist() == [4, 2, 9]
    assert table["split"].tolist() == ["val", "test", "official_test"]
    assert str(table["prdtypecode"].dtype) == "Int64"
    assert table["prdtypecode"].tolist()[:2] == [10, 2905] and table["prdtypecode"].isna().tolist() == [
        False,
        False,
        True,
    ]
    assert all(table[c].dtype == np.float32 for c in PROBA_COLUMNS)
    assert table["p_10"].tolist() == [1.0, 0.0, 0.0] and table["p_2905"].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"^3 rows but 2 probability rows$"):
        C.proba_frame(rows, proba[:2])
    with pytest.raises(ValueError, match=r"row 0 sums to"):
        C.proba_frame(rows, proba * 2)


def _table():
    # val: 10 -> 10, 40 -> 10 ; test: 40 -> 40 ; official: no label
    rows = pd.DataFrame(
        {"row_id": [1, 2, 3, 4], "split": ["val", "val", "test", "official_test"], "prdtypecode": [10, 40, 40, None]}
    )
    proba = np.zeros((4, K))
    proba[[0, 1, 2, 3], [0, 0, 1, 3]] = 1.0
    return C.proba_frame(rows, proba)


def test_split_scores_only_labelled_splits():
    result = C.split_scores(_table())
    # val: class 10 F1 2/3 (1 row), class 40 F1 0 (1 row) -> weighted 1/3, macro 1/3, accuracy 1/2
    assert result == {
        "val": {"weighted_f1": round(1 / 3, 6), "macro_f1": round(1 / 3, 6), "accuracy": 0.5},
        "test": {"weighted_f1": 1.0, "macro_f1": 1.0, "accuracy": 1.0},
    }
    assert C.split_scores(_table().iloc[3:]) == {}


def test_write_model_outputs_and_read_probs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = _table()
    metrics = C.write_model_outputs("m1", table, extra_metrics={"epochs": 3, "val": {"note": "replaced"}})
    assert metrics == {
        "val": {"note": "replaced"},
        "test": {"weighted_f1": 1.0, "macro_f1": 1.0, "accuracy": 1.0},
        "epochs": 3,
    }
    assert json.loads(Path("reports/metrics/m1.json").read_text()) == metrics
    back = C.read_probs("m1")
    pd.testing.assert_frame_equal(back, table)
    plain = C.write_model_outputs("m2", table)
    assert plain == C.split_scores(table)
    assert json.loads(Path("reports/metrics/m2.json").read_text()) == plain
    assert C.write_model_outputs("m3", table, extra_metrics={}) == plain


def test_read_probs_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        PipelineError,
        match=r"^reports/probs/nope\.parquet: not found; run `dvc repro nope` or remove "
        r"nope from fusion\.models$",
    ):
        C.read_probs("nope")
    Path("reports/probs").mkdir(parents=True)
    _table().drop(columns="p_40").to_parquet("reports/probs/a.parquet")
    with pytest.raises(
        PipelineError,
        match=r"^reports/probs/a\.parquet: missing column p_40; expected row_id, split, "
        r"prdtypecode, p_<code> x27$",
    ):
        C.read_probs("a")
    _table().drop(columns="split").to_parquet("reports/probs/b.parquet")
    with pytest.raises(PipelineError, match=r"^reports/probs/b\.parquet: missing column split;"):
        C.read_probs("b")
    bad = _table()
    bad["p_10"] = bad["p_10"] * 3
    bad.to_parquet("reports/probs/c.parquet")
    with pytest.raises(PipelineError, match=r"^reports/probs/c\.parquet: row 0 sums to 3\.000000, expected 1$") as info:
        C.read_probs("c")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert CLASS_CODES[0] == 10

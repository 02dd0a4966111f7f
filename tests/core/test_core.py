"""Shared core: class table, params loading, atomic writes, contract helpers, scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, PROBA_COLUMNS, codes_to_indices, indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.contracts.model_files import check_proba, proba_frame, split_scores
from rakuten.core import params as P
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path, write_json


def test_class_table():
    assert N_CLASSES == 27 and list(CLASS_CODES) == sorted(CLASS_CODES)
    assert PROBA_COLUMNS[0] == "p_10" and PROBA_COLUMNS[-1] == "p_2905"
    assert np.array_equal(indices_to_codes(codes_to_indices([2905, 10])), [2905, 10])
    with pytest.raises(ValueError, match="unknown product-type code 11 at position 1"):
        codes_to_indices([10, 11])


def test_load_params_errors(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        P.load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(PipelineError, match="invalid YAML"):
        P.load_params(tmp_path / "bad.yaml")


def test_atomic_path_keeps_old_output_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json({"v": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "d"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [".rakuten-output", "b"]  # the marker: ours to replace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_contract_table_and_scores():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(N_CLASSES), size=6)
    rows = pd.DataFrame(
        {
            "row_id": range(6),
            "split": ["val"] * 3 + ["test"] * 2 + ["official_test"],
            "prdtypecode": [10, 40, 50, 10, 40, None],
        }
    )
    table = proba_frame(rows, proba)
    assert list(table.columns) == ["row_id", "split", "prdtypecode", *PROBA_COLUMNS]
    assert set(split_scores(table)) == {"val", "test"}
    with pytest.raises(ValueError, match="row 0 sums to"):
        check_proba(proba * 2)
    with pytest.raises(ValueError, match=r"expected shape \(n, 27\)"):
        check_proba(proba[:, :5])


def test_scores_on_a_known_case():
    result = scores([10, 10, 40, 40], [10, 40, 40, 40])
    assert result["accuracy"] == 0.75
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-6)


def test_stale_temp_from_a_killed_run_is_removed(tmp_path):
    stale = tmp_path / ".out.json.rakuten-99999999-abc123.tmp"  # a pid above Linux's pid_max: a dead process
    stale.write_text("half-written by a killed run")
    write_json({"v": 2}, tmp_path / "out.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]

"""Split: stratified, duplicate groups never straddle, deterministic, documented fallback for tiny classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten.core.errors import PipelineError
from rakuten.data.split import assign_splits, duplicate_groups, split_catalog, text_key
from tests.helpers.stagerun import error_lines, run_stage_script

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_text_key_folds_case_accents_tags_and_punctuation():
    assert text_key("Poupée  <b>Rose</b>!", None) == text_key("poupee rose", "") == "poupee rose"
    assert text_key("a", "b") != text_key("a", "c")


def test_duplicate_groups_are_transitive():
    groups = duplicate_groups(["a", "b", "c", "d"], ["x", "y", "y", ""])
    assert groups[1] == groups[2] and len({groups[0], groups[1], groups[3]}) == 3
    groups = duplicate_groups(["a", "a", "b", "c"], ["", "h", "h", ""])
    assert groups[0] == groups[1] == groups[2] != groups[3]


def test_every_row_assigned_and_official_test_kept(tiny_split, tiny_catalog):
    assert len(tiny_split) == len(tiny_catalog)
    assert (tiny_split.loc[tiny_split["is_official_test"], "split"] == "official_test").all()
    assert set(tiny_split.loc[~tiny_split["is_official_test"], "split"]) == {"train", "val", "test"}


def test_stratified_proportions(tiny_split):
    labelled = tiny_split[~tiny_split["is_official_test"]]
    shares = labelled["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.04)
    assert shares["val"] == pytest.approx(0.1, abs=0.03)
    per_class = pd.crosstab(labelled["prdtypecode"], labelled["split"])
    big = per_class[per_class.sum(axis=1) >= 20]
    assert ((big["val"] / big.sum(axis=1)) - 0.1).abs().max() < 0.06


def test_no_duplicate_group_straddles_splits(tiny_split):
    labelled = tiny_split[~tiny_split["is_official_test"]]
    assert (labelled.groupby("group_id")["split"].nunique() == 1).all()
    keys = [text_key(d, s) for d, s in zip(labelled["designation"], labelled["description"])]
    by_text = pd.DataFrame({"key": keys, "split": labelled["split"].to_numpy()})
    assert (by_text.groupby("key")["split"].nunique() == 1).all()
    assert (labelled.groupby("group_id").size() > 1).any(), "the tiny sample should contain duplicate groups"


@pytest.mark.param_effect("split.seed")
def test_deterministic_and_seed_sensitive(tiny_catalog):
    a, _ = split_catalog(tiny_catalog, FRACTIONS, seed=1)
    b, _ = split_catalog(tiny_catalog, FRACTIONS, seed=1)
    c, _ = split_catalog(tiny_catalog, FRACTIONS, seed=2)
    assert a.equals(b) and not a["split"].equals(c["split"])


def test_classes_with_one_or_two_rows_go_to_train():
    labels = np.array([10] * 40 + [40] * 2 + [50])
    splits, train_only = assign_splits(labels, np.arange(len(labels)), FRACTIONS, seed=0)
    assert train_only == [40, 50]
    assert set(splits[40:]) == {"train"}
    assert {"train", "val", "test"} <= set(splits[:40])


def test_stage_rejects_fractions_not_summing_to_one(tmp_path):
    result = run_stage_script("split", tmp_path, {"split.val": 0.3})
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: params.yaml: split.train + split.val + split.test = 1.2, expected them to sum to 1"
    ]


def test_stage_rejects_negative_fraction(tmp_path):
    result = run_stage_script("split", tmp_path, {"split.val": -0.1, "split.train": 1.0})
    assert error_lines(result) == ["error: params.yaml: split.val = -0.1, expected a number in [0.0, 1.0]"]


@pytest.fixture(scope="module")
def tiny_hashes(tiny_catalog):
    from rakuten.image.image_hash import HashConfig, hash_catalog

    return hash_catalog(tiny_catalog, HashConfig(n_jobs=1))


def _straddling_near_groups(table: pd.DataFrame, hashes: pd.DataFrame) -> int:
    merged = table.merge(hashes[["row_id", "near_dup_group"]], on="row_id")
    near = merged[(merged["split"] != "official_test") & (merged["near_dup_group"] >= 0)]
    return int((near.groupby("near_dup_group")["split"].nunique() > 1).sum())


def test_near_duplicate_images_never_straddle_splits(tiny_catalog, tiny_hashes):
    table, report = split_catalog(tiny_catalog, FRACTIONS, seed=0, image_groups=tiny_hashes)
    assert _straddling_near_groups(table, tiny_hashes) == 0
    assert report["duplicate_groups"]["near_duplicate_groups_unioned"] > 0
    assert report["duplicate_groups"]["image_groups"] == "image_hash"
    by_bytes, by_bytes_report = split_catalog(tiny_catalog, FRACTIONS, seed=0)  # file SHA-1 only: leaks
    assert _straddling_near_groups(by_bytes, tiny_hashes) > 0
    assert by_bytes_report["duplicate_groups"]["near_duplicate_groups_unioned"] == 0


def test_a_near_duplicate_pair_of_different_texts_and_classes_shares_a_split(tiny_catalog):
    labelled = tiny_catalog[~tiny_catalog["is_official_test"]]
    a = labelled.iloc[0]
    b = labelled[labelled["prdtypecode"] != a["prdtypecode"]].iloc[-1]
    groups = pd.DataFrame({"row_id": tiny_catalog["row_id"], "exact_dup_group": -1, "near_dup_group": -1})
    groups.loc[groups["row_id"].isin([a["row_id"], b["row_id"]]), "near_dup_group"] = 0
    for seed in range(6):
        table, report = split_catalog(tiny_catalog, FRACTIONS, seed=seed, image_groups=groups)
        split_of = table.set_index("row_id")["split"]
        assert split_of[a["row_id"]] == split_of[b["row_id"]]
        assert report["duplicate_groups"]["near_duplicate_groups_unioned"] == 1


def test_image_groups_must_cover_every_labelled_row(tiny_catalog, tiny_hashes):
    with pytest.raises(PipelineError, match="image groups: no row for row_id"):
        split_catalog(tiny_catalog, FRACTIONS, seed=0, image_groups=tiny_hashes.iloc[1:])
    with pytest.raises(PipelineError, match="missing column 'near_dup_group'"):
        split_catalog(tiny_catalog, FRACTIONS, seed=0, image_groups=tiny_hashes.drop(columns="near_dup_group"))


def test_classes_left_with_one_training_row_are_named_by_prdtypecode(caplog):
    """tfidf_svm's calibrated SVM stops on a class with a single training row without naming it: the split
    names every such class (a single labelled row, or 3 rows spread over train / val / test)."""
    labels = [10] * 40 + [2583] + [1280] * 3
    catalog = pd.DataFrame(
        {
            "row_id": np.arange(len(labels)),
            "designation": [f"product {i}" for i in range(len(labels))],
            "description": None,
            "image_path": "",
            "image_ok": False,
            "prdtypecode": labels,
            "is_official_test": False,
        }
    )
    caplog.set_level("WARNING", logger="rakuten")
    table, report = split_catalog(catalog, FRACTIONS, seed=0)
    per_split = table.assign(code=labels).groupby("code")["split"].value_counts().unstack(fill_value=0)
    assert per_split.loc[2583, "train"] == 1 and per_split.loc[1280].tolist() == [1, 1, 1]  # test, train, val
    assert report["classes_under_2_train_rows"] == {"1280": 1, "2583": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "split: prdtypecode 1280 (1 training row), 2583 (1 training row): fewer than 2 training rows; tfidf_svm's "
        "calibrated SVM (classifier: svm) stops on such a class (add labelled rows of it, or set "
        "tfidf_svm.classifier to rf, sgd or logreg)"
    ]
    _, healthy = split_catalog(catalog[catalog["prdtypecode"] == 10], FRACTIONS, seed=0)
    assert healthy["classes_under_2_train_rows"] == {}

"""The duplicate-aware split on hand-made catalogs with known answers (docs/mutation.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten.core.config import ConfigError
from rakuten.core.errors import PipelineError
from rakuten.data import split as S

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_split_config_fractions_and_sum_check():
    cfg = S.SplitConfig(train=0.6, val=0.3, test=0.1, seed=1)
    assert cfg.fractions == {"train": 0.6, "val": 0.3, "test": 0.1}
    assert list(cfg.fractions) == ["train", "val", "test"]
    cfg.validate("split")
    S.SplitConfig(train=0.8, val=0.1, test=0.1 + 5e-7).validate("split")  # within 1e-6
    with pytest.raises(
        ConfigError,
        match=r"^split\.train \+ split\.val \+ split\.test = 1\.1, expected them to sum "
        r"to 1$",
    ):
        S.SplitConfig(train=0.8, val=0.2, test=0.1).validate("split")
    with pytest.raises(ConfigError, match=r"^s\.train \+ s\.val \+ s\.test = 0\.99, expected"):
        S.SplitConfig(train=0.8, val=0.09, test=0.1).validate("s")


def test_text_key_exact_values():
    assert S.text_key("Élan <b>Vital</b>", None) == "elan vital"
    assert S.text_key("Élan", "") == "elan"
    assert S.text_key("A_B--c", "Dé<br/>JÀ vu!!") == "a b c de ja vu"
    assert S.text_key("  x  ", "ŒUF  ﬁn") == "x œuf fin"  # NFKD splits the ligature fi
    assert S.text_key("Ça", "<p class='x'>va</p>") == "ca va"


def test_file_digest_is_sha1_or_empty(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert S.file_digest(tmp_path / "f") == "a9993e364706816aba3e25717850c26c9cd0d89d"  # SHA-1("abc"), FIPS 180
    assert S.file_digest(str(tmp_path / "f")) == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert S.file_digest(tmp_path / "missing") == ""
    assert S.file_digest(tmp_path) == ""  # a directory cannot be read


def test_duplicate_groups_exact_ids():
    # rows 0-1 share text, 1-3 share an image, 4 alone (empty keys never group), 5-6 share a third key
    groups = S.duplicate_groups(
        ["a", "a", "b", "c", "", "d", "e"], ["", "x", "y", "x", "", "", ""], ["", "", "", "", "", "n", "n"]
    )
    assert groups.tolist() == [0, 0, 1, 0, 2, 3, 3]
    assert groups.dtype == np.int64
    assert S.duplicate_groups(["", ""], ["", ""]).tolist() == [0, 1]
    assert S.duplicate_groups(["k", "j", "k"], ["i", "i", ""]).tolist() == [0, 0, 0]
    # a chain: 3-2 by text, 2-1 by image, 1-0 by text again in the third list
    chain = S.duplicate_groups(["p", "q", "r", "r"], ["", "z", "z", ""], ["t", "t", "", ""])
    assert chain.tolist() == [0, 0, 0, 0]
    assert S.duplicate_groups([], []).tolist() == []


def test_assign_splits_quotas_per_class():
    # class 10: 10 single-row groups -> quotas val = test = max(1, round(0.1 * 10)) = 1
    # class 40: 20 single-row groups, fractions 0.5/0.25/0.25 -> quotas 5 and 5
    labels = np.array([10] * 10 + [40] * 20)
    splits, train_only = S.assign_splits(labels, np.arange(30), FRACTIONS, seed=0)
    assert train_only == []
    assert splits.dtype == object
    counts = pd.crosstab(labels, splits)
    assert counts.loc[10].to_dict() == {"test": 1, "train": 8, "val": 1}
    splits, _ = S.assign_splits(labels, np.arange(30), {"train": 0.5, "val": 0.25, "test": 0.25}, seed=3)
    counts = pd.crosstab(labels, splits)
    assert counts.loc[40].to_dict() == {"test": 5, "train": 10, "val": 5}
    assert counts.loc[10].to_dict() == {"test": 2, "train": 6, "val": 2}  # round(2.5) = 2 (half to even)


def test_assign_splits_counts_rows_of_multi_row_groups():
    # class 10: groups of 3 rows each (4 groups, 12 rows); quotas val = test = round(0.25 * 12) = 3 rows:
    # one group fills each quota
    labels = np.array([10] * 12)
    groups = np.repeat(np.arange(4), 3)
    splits, _ = S.assign_splits(labels, groups, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    per_group = pd.Series(splits).groupby(groups).agg(lambda s: set(s))
    assert all(len(s) == 1 for s in per_group)
    assert pd.Series(splits).value_counts().to_dict() == {"train": 6, "test": 3, "val": 3}


def test_assign_splits_zero_fraction_and_train_kept():
    labels = np.array([10] * 5)
    splits, _ = S.assign_splits(labels, np.arange(5), {"train": 0.9, "val": 0.0, "test": 0.1}, seed=0)
    assert sorted(splits) == ["test"] + ["train"] * 4
    # 3 groups, quotas val = test = round(0.5 * 3) = 2: every group would leave train, so the last goes back
    labels = np.array([7, 7, 7])
    splits, _ = S.assign_splits(labels, np.arange(3), {"train": 0.01, "val": 0.5, "test": 0.5}, seed=0)
    assert sorted(splits) == ["test", "test", "train"]
    splits, _ = S.assign_splits(labels, np.arange(3), {"train": 0.0, "val": 0.5, "test": 0.5}, seed=0)
    assert sorted(splits) == ["test", "test", "val"]


def test_assign_splits_group_label_is_the_majority_and_small_classes_go_to_train():
    # groups 0 and 1 are mostly class 40; class 40 then has only 2 groups -> train only (with their class-10 row)
    labels = np.array([40, 40, 10, 40, 40, 10, 10, 10, 10])
    groups = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5])
    splits, train_only = S.assign_splits(labels, groups, FRACTIONS, seed=0)
    assert train_only == [40] and type(train_only[0]) is int
    assert splits[:5].tolist() == ["train"] * 5
    # class 10: 4 single-row groups -> quotas val = test = max(1, round(0.1 * 4)) = 1
    assert sorted(splits[5:]) == ["test", "train", "train", "val"]
    same, _ = S.assign_splits(labels, groups, FRACTIONS, seed=0)
    assert same.tolist() == splits.tolist()


def test_assign_splits_order_depends_on_the_seed():
    labels = np.array([10] * 30)
    seen = {tuple(S.assign_splits(labels, np.arange(30), FRACTIONS, seed=s)[0]) for s in range(4)}
    assert len(seen) > 1


def test_group_keys_and_image_group_keys():
    assert S._group_keys(np.array([0, -1, 12]), "e") == ["e0", "", "e12"]
    table = pd.DataFrame(
        {"row_id": [3, 1, 2, 3], "exact_dup_group": [0, -1, 5, 9], "near_dup_group": [-1, 4, 4, 9], "other": 0}
    )
    exact, near = S.image_group_keys(np.array([1, 2, 3]), table)
    assert exact == ["", "e5", "e0"] and near == ["n4", "n4", ""]
    with pytest.raises(
        PipelineError,
        match=r"^image groups: missing column 'exact_dup_group'; expected row_id, "
        r"exact_dup_group, near_dup_group \(data/interim/image_hashes\.parquet\)$",
    ):
        S.image_group_keys(np.array([1]), table.drop(columns=["exact_dup_group", "near_dup_group"]))
    with pytest.raises(PipelineError, match=r"^image groups: missing column 'row_id'"):
        S.image_group_keys(np.array([1]), table.drop(columns="row_id"))
    with pytest.raises(
        PipelineError,
        match=r"^image groups: no row for row_id 7 \(2 catalog rows missing\); rerun "
        r"the image_hash stage$",
    ):
        S.image_group_keys(np.array([1, 7, 8]), table)


def test_unioned_near_groups_counts_clusters_over_several_groups():
    before = np.array([0, 1, 1, 2, 3, 3])
    near = ["n1", "n1", "", "n2", "n3", "n3"]
    # n1 spans groups 0 and 1, n2 one group, n3 one group (two rows)
    assert S.unioned_near_groups(before, near) == 1
    assert S.unioned_near_groups(before, ["", "", "", "", "", ""]) == 0
    assert S.unioned_near_groups(before, ["", "x", "x", "x", "x", "x"]) == 1
    assert S.unioned_near_groups(np.array([0, 1, 2, 3]), ["a", "a", "b", "b"]) == 2


def _catalog(tmp_path):
    """12 labelled rows of class 10 (rows 0-1 same text, 2-3 same image bytes), 3 of class 40, 2 official."""
    img = tmp_path / "img"
    img.mkdir()
    paths = []
    for i in range(17):
        p = img / f"{i}.jpg"
        p.write_bytes(b"same" if i in (2, 3) else f"img{i}".encode())
        paths.append(str(p))
    labelled = 15
    designation = ["Dup text", "dup TEXT!"] + [f"item {i}" for i in range(2, 17)]
    return pd.DataFrame(
        {
            "row_id": np.arange(17),
            "designation": designation,
            "description": [None] * 17,
            "image_path": paths,
            "image_ok": [True] * 16 + [False],
            "prdtypecode": pd.array([10] * 12 + [40] * 3 + [None, None], dtype="Int64"),
            "is_official_test": [False] * labelled + [True] * 2,
        }
    )


def test_split_catalog_table_and_report(tmp_path):
    catalog = _catalog(tmp_path)
    table, report = S.split_catalog(catalog.iloc[::-1].reset_index(drop=True), FRACTIONS, seed=0)
    assert table.columns.tolist() == ["row_id", "split", "group_id"]
    assert table["row_id"].tolist() == list(range(17)) and table.index.tolist() == list(range(17))
    assert table["row_id"].dtype == np.int64 and table["group_id"].dtype == np.int64
    assert table["split"].iloc[15:].tolist() == ["official_test"] * 2
    assert table["group_id"].iloc[15:].tolist() == [-1, -1]
    g = table.set_index("row_id")["group_id"]
    assert g[0] == g[1] and g[2] == g[3] and len(set(g.iloc[:15])) == 13
    s = table.set_index("row_id")["split"]
    assert s[0] == s[1] and s[2] == s[3]
    assert report["rows"] == {
        "train": int((s == "train").sum()),
        "val": int((s == "val").sum()),
        "test": int((s == "test").sum()),
        "official_test": 2,
    }
    assert sum(report["rows"].values()) == 17
    assert report["fractions_requested"] == FRACTIONS
    assert report["duplicate_groups"] == {
        "groups": 13,
        "multi_row_groups": 2,
        "rows_in_multi_row_groups": 4,
        "image_groups": "file_sha1",
        "near_duplicate_groups_unioned": 0,
        # class 10 is 10/11 of train and 1/2 of val: 40.9 points apart
        "groups_over_20_rows": 0,
        "largest_group_rows": 2,
        "largest_group_class": 10,
        "largest_group_share_of_class": 0.1667,
        "max_class_share_gap_points": 40.909,
        "max_gap_class": 10,
    }
    assert report["classes_train_only"] == []
    assert list(report["per_class"]) == ["10", "40"]
    assert report["per_class"]["40"] == {"train": 1, "val": 1, "test": 1}
    assert sum(report["per_class"]["10"].values()) == 12 and report["per_class"]["10"]["val"] >= 1


def test_split_catalog_with_image_groups_and_unreadable_images(tmp_path):
    catalog = _catalog(tmp_path)
    catalog.loc[3, "image_ok"] = False  # unreadable: its bytes no longer group rows 2 and 3
    table, _ = S.split_catalog(catalog, FRACTIONS, seed=0)
    g = table.set_index("row_id")["group_id"]
    assert g[2] != g[3]
    hashes = pd.DataFrame({"row_id": np.arange(17), "exact_dup_group": -1, "near_dup_group": -1})
    hashes.loc[[5, 6], "near_dup_group"] = 0  # a near-duplicate pair of different texts
    hashes.loc[[7, 8], "exact_dup_group"] = 1
    hashes.loc[[8], "near_dup_group"] = 0  # joins 5, 6 through 8: one cluster over three groups
    table, report = S.split_catalog(catalog, FRACTIONS, seed=0, image_groups=hashes)
    g = table.set_index("row_id")["group_id"]
    assert g[5] == g[6] == g[7] == g[8]
    assert g[2] != g[3]  # image_hash table given: file bytes are not read
    assert report["duplicate_groups"]["image_groups"] == "image_hash"
    assert report["duplicate_groups"]["near_duplicate_groups_unioned"] == 1
    assert report["duplicate_groups"]["multi_row_groups"] == 2
    assert report["duplicate_groups"]["rows_in_multi_row_groups"] == 6


def test_split_catalog_tiny_class_listed_as_train_only(tmp_path):
    catalog = _catalog(tmp_path)
    catalog = catalog[catalog["row_id"] != 14]  # class 40 keeps 2 rows
    table, report = S.split_catalog(catalog, FRACTIONS, seed=0)
    assert report["classes_train_only"] == [40]
    assert table.set_index("row_id").loc[[12, 13], "split"].tolist() == ["train", "train"]
    assert report["per_class"]["40"] == {"train": 2, "val": 0, "test": 0}


def test_a_small_class_sorted_first_does_not_stop_the_others():
    labels = np.array([10, 10] + [40] * 10)  # class 10 (2 groups) comes first in sorted order
    splits, train_only = S.assign_splits(labels, np.arange(12), FRACTIONS, seed=0)
    assert train_only == [10] and splits[:2].tolist() == ["train", "train"]
    assert sorted(splits[2:]) == ["test"] + ["train"] * 8 + ["val"]


def test_split_catalog_is_assign_splits_on_the_duplicate_groups(tmp_path):
    catalog = _catalog(tmp_path)
    for seed in (0, 1, 2):
        table, _ = S.split_catalog(catalog, FRACTIONS, seed=seed)
        labelled = table.iloc[:15]
        expected, _ = S.assign_splits(
            catalog["prdtypecode"].iloc[:15].to_numpy(np.int64), labelled["group_id"].to_numpy(), FRACTIONS, seed
        )
        assert labelled["split"].tolist() == expected.tolist()


def test_split_catalog_keys_use_the_description_and_skip_unreadable_images(tmp_path):
    catalog = _catalog(tmp_path)
    catalog.loc[[5, 6], "designation"] = "Même titre"
    catalog.loc[5, "description"] = "rouge"
    catalog.loc[6, "description"] = "bleu"  # same title, other description: not duplicates
    catalog.loc[[8, 9], "image_ok"] = False  # two unreadable images: no key, not grouped
    table, _ = S.split_catalog(catalog, FRACTIONS, seed=0)
    g = table.set_index("row_id")["group_id"]
    assert g[5] != g[6] and g[8] != g[9]
    catalog.loc[6, "description"] = "<b>Rouge</b>"
    g = S.split_catalog(catalog, FRACTIONS, seed=0)[0].set_index("row_id")["group_id"]
    assert g[5] == g[6]


def test_split_catalog_reports_zero_for_splits_no_class_reaches(tmp_path):
    catalog = _catalog(tmp_path)
    catalog = catalog[catalog["row_id"].isin([0, 1, 2, 12, 13, 15, 16])]  # 2 groups per class: all train
    table, report = S.split_catalog(catalog, FRACTIONS, seed=0)
    assert report["classes_train_only"] == [10, 40]
    assert report["per_class"] == {"10": {"train": 3, "val": 0, "test": 0}, "40": {"train": 2, "val": 0, "test": 0}}
    assert report["rows"] == {"train": 5, "val": 0, "test": 0, "official_test": 2}


def test_split_catalog_with_only_official_test_rows(tmp_path):
    catalog = _catalog(tmp_path).iloc[15:]
    table, report = S.split_catalog(catalog, FRACTIONS, seed=0)
    assert table["split"].tolist() == ["official_test"] * 2 and table["group_id"].tolist() == [-1, -1]
    assert report["duplicate_groups"]["groups"] == 0 and report["duplicate_groups"]["multi_row_groups"] == 0
    assert report["duplicate_groups"]["rows_in_multi_row_groups"] == 0
    assert report["per_class"] == {} and report["classes_train_only"] == []


def test_a_group_too_big_for_val_or_test_goes_to_train():
    # class 10: 100 single rows and one group of 30 (a placeholder photo): quotas val = test = 13 rows;
    # the group would more than double either, so it trains whatever the seed, and the shares stay close
    labels = np.array([10] * 130 + [40] * 100)
    groups = np.concatenate([np.arange(100), np.full(30, 100), np.arange(101, 201)])
    for seed in range(5):
        splits, _ = S.assign_splits(labels, groups, FRACTIONS, seed=seed)
        assert set(splits[100:130]) == {"train"}
        counts = pd.crosstab(labels, splits)
        assert counts.loc[10, "val"] == 13 and counts.loc[10, "test"] == 13
    # a group of 25 with 13 rows missing: 25 < 26 brings test closer to its quota (12 over instead of 13 short)
    groups = np.concatenate([np.arange(105), np.full(25, 105), np.arange(106, 206)])
    placed = {S.assign_splits(labels, groups, FRACTIONS, seed=seed)[0][105] for seed in range(20)}
    assert placed - {"train"}


def test_group_balance_reports_large_groups_and_share_gaps():
    labels = np.array([10] * 50 + [40] * 50)
    groups = np.concatenate([np.zeros(22, int), np.arange(1, 79)])
    splits = np.array(["train"] * 80 + ["val"] * 10 + ["test"] * 10, dtype=object)
    splits[[0, 50]] = "train"
    b = S.group_balance(labels, groups, splits)
    assert b["groups_over_20_rows"] == 1 and b["largest_group_rows"] == 22 and b["largest_group_class"] == 10
    assert b["largest_group_share_of_class"] == 0.44
    # class 10: 50/80 of train, 0/10 of val and test -> 62.5 points; class 40 30/80 vs 10/10 -> 62.5 as well
    assert b["max_class_share_gap_points"] == 62.5
    assert S.group_balance(np.array([], int), np.array([], int), np.array([], object))["largest_group_rows"] == 0

"""The image cleaning end to end on the tiny sample: every planted defect found (P, R >= 0.95)."""

from __future__ import annotations

import json

import cv2
import pandas as pd
import pytest

from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.image.config import ImageCleanConfig
from rakuten.image.contact_sheet import contact_sheets
from rakuten.image.image_clean import COLUMNS, clean_frame
from rakuten.image.image_hash import HashConfig, hash_catalog
from rakuten.image.quality_report import quality_report
from rakuten.image.scoring import DETECTORS, load_defects, score_detectors
from tests.helpers.stagerun import default_params, error_lines, run_stage_script

CFG = ImageCleanConfig(size=64, n_jobs=2)


@pytest.fixture(scope="module")
def cleaned(tiny_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("image_clean") / "images"
    table = clean_frame(tiny_split, out, CFG, labels_split=tiny_split[["row_id", "prdtypecode", "split"]])
    return table, out


def test_every_planted_defect_is_found(cleaned, tiny_split, tiny_sample):
    table, _ = cleaned
    scores, missing = score_detectors(
        table, tiny_split["image_path"].tolist(), load_defects(tiny_sample / "defects.json")
    )
    assert missing == 0
    for name in DETECTORS:
        assert scores[name]["planted"] > 0, name
        assert scores[name]["precision"] >= 0.95, (name, scores[name])
        assert scores[name]["recall"] >= 0.95, (name, scores[name])


def test_one_cleaned_image_per_row_and_the_contract_columns(cleaned, tiny_split):
    table, out = cleaned
    assert list(table.columns) == COLUMNS
    assert table["row_id"].tolist() == tiny_split["row_id"].tolist()
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(f"{r}.jpg" for r in table["row_id"])
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".jpg") == [".rakuten-output"]
    image = cv2.imread(table["clean_path"].iloc[0])
    assert image.shape == (64, 64, 3)
    assert table["readable"].all() and (table["decode_status"] == "ok").all()
    flagged = table[table["is_red_cast"]]
    assert (flagged["red_ratio_after"] < flagged["red_ratio"]).all()
    assert table.loc[table["has_border"], "actions"].str.contains("crop_zoom").all()
    assert table.loc[table["is_blurry"], "actions"].str.contains("sharpen").all()


@pytest.mark.param_effect("image_clean.near_duplicates.cross_class_weight")
def test_policy_marks_only_train_rows_and_report_counts(cleaned, tiny_split):
    table, _ = cleaned
    train = (tiny_split["split"] == "train").to_numpy()
    assert table.loc[~train, "keep_for_train"].all()
    dropped = table[~table["keep_for_train"]]
    assert len(dropped) > 0 and (dropped["near_dup_group"] >= 0).all()
    for _, members in table[train & (table["near_dup_group"] >= 0).to_numpy()].groupby("near_dup_group"):
        labels = tiny_split.set_index("row_id").loc[members["row_id"], "prdtypecode"]
        kept = members[members["keep_for_train"].to_numpy()]
        assert len(kept) == labels.nunique()  # one kept per class
        expected = 1.0 if labels.nunique() == 1 else CFG.near_duplicates.cross_class_weight
        assert (kept["sample_weight"] == expected).all()
    report = quality_report(table, CFG, tiny_split["split"])
    assert report["rows"] == len(table) == report["readable"]
    assert report["duplicate_policy"]["rows_not_kept_for_train"] == len(dropped)
    json.dumps(report)


def test_same_result_in_process_and_in_parallel(cleaned, tiny_split, tmp_path):
    table, _ = cleaned
    rows = tiny_split.head(80)
    serial = clean_frame(rows, tmp_path / "a", ImageCleanConfig(size=64, n_jobs=1))
    compare = ["blur_score", "is_blurry", "red_ratio", "has_border", "actions", "readable", "decode_status"]
    parallel = clean_frame(rows, tmp_path / "b", ImageCleanConfig(size=64, n_jobs=2))
    pd.testing.assert_frame_equal(serial[compare], parallel[compare])
    assert (tmp_path / "a" / "0.jpg").read_bytes() == (tmp_path / "b" / "0.jpg").read_bytes()


def test_groups_come_from_the_given_hash_table(tiny_split, tmp_path):
    rows = tiny_split.head(6)
    hashes = hash_catalog(rows, HashConfig(n_jobs=1))
    hashes["near_dup_group"] = [0, 0, -1, 1, 1, -1]  # as the image_hash stage would have found them
    table = clean_frame(rows, tmp_path / "a", ImageCleanConfig(size=64, n_jobs=1), hashes=hashes.iloc[::-1])
    assert table["near_dup_group"].tolist() == [0, 0, -1, 1, 1, -1]
    assert table["sha1"].tolist() == hashes["sha1"].tolist()
    with pytest.raises(Exception, match=f"no row for row_id {rows['row_id'].iloc[5]}"):
        clean_frame(rows, tmp_path / "b", ImageCleanConfig(size=64, n_jobs=1), hashes=hashes.head(5))


def test_new_rows_are_not_hashed(tiny_split, tmp_path, monkeypatch):
    """Without labels (``rakuten predict``) there is no duplicate policy to feed: no hashing at all."""
    import rakuten.image.image_clean as pipeline

    def no_hashing(*args, **kwargs):
        raise AssertionError("new rows must not be hashed")

    monkeypatch.setattr(pipeline, "hash_catalog", no_hashing)
    rows = tiny_split.head(4)
    table = clean_frame(rows, tmp_path / "out", ImageCleanConfig(size=64, n_jobs=1))
    assert table["sha1"].tolist() == [""] * 4 and table["phash"].tolist() == [""] * 4
    assert table["exact_dup_group"].tolist() == [-1] * 4 and table["near_dup_group"].tolist() == [-1] * 4
    assert table["keep_for_train"].all() and table.attrs["timing_s"]["hashing"] < 0.1
    assert (tmp_path / "out" / f"{rows['row_id'].iloc[0]}.jpg").is_file()


def test_unreadable_and_missing_images_get_a_placeholder(tiny_split, tmp_path):
    rows = tiny_split.head(3).copy()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    rows["image_path"] = [str(bad), str(tmp_path / "absent.jpg"), rows["image_path"].iloc[2]]
    table = clean_frame(rows, tmp_path / "out", ImageCleanConfig(size=64, n_jobs=1))
    assert table["readable"].tolist() == [False, False, True]
    assert table["decode_status"].tolist()[:2] == ["unreadable", "missing"]
    assert not table["keep_for_train"].iloc[0]
    grey = cv2.imread(table["clean_path"].iloc[0])
    assert grey.shape == (64, 64, 3) and abs(int(grey.mean()) - 128) <= 1


def test_contact_sheets_one_per_defect(cleaned, tiny_split):
    table, _ = cleaned
    sheets = contact_sheets(table, tiny_split["image_path"].tolist(), tiny_split["prdtypecode"].tolist(), 3)
    assert set(sheets) == set(DETECTORS)
    assert all(s.ndim == 3 and s.shape[0] > 100 for s in sheets.values())


def test_default_params_validate_and_bad_ones_name_the_key():
    section = default_params()["image_clean"]
    assert parse_section(ImageCleanConfig, section, "image_clean").size == 224
    bad = json.loads(json.dumps(section))
    bad["red_cast"]["method"] = "sepia"
    with pytest.raises(PipelineError, match=r"image_clean\.red_cast\.method = 'sepia', expected one of gray_world"):
        parse_section(ImageCleanConfig, bad, "image_clean")


def test_stage_writes_its_outputs_and_fails_in_one_line(tiny_split, tiny_catalog, tiny_sample, tmp_path):
    (tmp_path / "data" / "interim").mkdir(parents=True)
    (tmp_path / "data" / "sample").mkdir(parents=True)
    tiny_catalog.to_parquet(tmp_path / "data" / "interim" / "catalog.parquet")
    tiny_split[["row_id", "split"]].to_parquet(tmp_path / "data" / "interim" / "split.parquet")
    hash_catalog(tiny_catalog, HashConfig(n_jobs=1)).to_parquet(tmp_path / "data" / "interim" / "image_hashes.parquet")
    (tmp_path / "data" / "sample" / "defects.json").write_bytes((tiny_sample / "defects.json").read_bytes())
    result = run_stage_script("image_clean", tmp_path, {"image_clean.size": 64, "image_clean.n_jobs": 1})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "reports" / "image_quality.json").read_text())
    assert set(report["detection"]) == set(DETECTORS)
    assert len(list((tmp_path / "data" / "processed" / "images").glob("*.jpg"))) == len(tiny_catalog)
    assert len(pd.read_parquet(tmp_path / "data" / "processed" / "image_quality.parquet")) == len(tiny_catalog)
    # the section it ran with, without the knobs that cannot change a cleaned image (n_jobs, contact sheets)
    recorded = json.loads((tmp_path / "data" / "processed" / "image_clean.json").read_text())["image_clean"]
    assert recorded["size"] == 64 and "n_jobs" not in recorded and "contact_sheet" not in recorded
    assert recorded["border"] == default_params()["image_clean"]["border"]
    assert sorted(p.name for p in (tmp_path / "reports" / "figures" / "image_clean").iterdir()) == sorted(
        [*(f"{d}.png" for d in DETECTORS), ".rakuten-output"]
    )
    failed = run_stage_script("image_clean", tmp_path / "bad", {"image_clean.blur.threshold": "high"})
    assert failed.returncode == 2
    assert error_lines(failed) == ["error: params.yaml: image_clean.blur.threshold = 'high', expected a number"]


def test_one_photo_on_thousands_of_rows_is_scored_and_drawn_without_listing_its_pairs():
    """Predicted pairs are counted, not listed (a 20,000-row cluster is 2e8 pairs), and a planted
    group none of whose files is in the catalog is ignored."""
    import tracemalloc

    import numpy as np

    n = 2000
    table = pd.DataFrame(
        {
            "row_id": range(n),
            "exact_dup_group": 0,
            "near_dup_group": 0,
            "is_blurry": False,
            "is_red_cast": False,
            "has_border": False,
            "keep_for_train": True,
            "sample_weight": 1.0,
        }
    )
    table.loc[n - 1, "exact_dup_group"] = -1  # a re-encode of the photo: a near duplicate only
    paths = [f"/data/images/image_train/f{k}.jpg" for k in range(n)]
    defects = {
        "exact_duplicates": [["images/image_train/f0.jpg", "images/image_train/f1.jpg"], ["x/y/absent.jpg"]],
        "near_duplicates": [["images/image_train/f1.jpg", f"images/image_train/f{n - 1}.jpg"]],
    }
    tracemalloc.start()
    scores, missing = score_detectors(table, paths, defects)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert missing == 1 and peak < 16 << 20  # listing the 2e6 pairs of each kind took ~500 MB
    assert {k: scores["exact_duplicates"][k] for k in ("predicted", "planted", "true_positives")} == {
        "predicted": (n - 1) * (n - 2) // 2,
        "planted": 1,
        "true_positives": 1,
    }
    assert {k: scores["near_duplicates"][k] for k in ("predicted", "planted", "true_positives")} == {
        "predicted": n - 1,
        "planted": 2,
        "true_positives": 2,
    }
    groups = np.arange(3 * n) // 3  # many clusters of exact copies only: all scanned for the near sheet
    table = pd.concat([table] * 3, ignore_index=True).assign(
        row_id=range(3 * n), exact_dup_group=groups, near_dup_group=groups
    )
    for column in ("blur_score", "red_ratio", "border_fraction"):
        table[column] = 0.0
    sheets = contact_sheets(table, [""] * len(table), None, 2)
    assert sheets["exact_duplicates"].shape[0] > sheets["near_duplicates"].shape[0]

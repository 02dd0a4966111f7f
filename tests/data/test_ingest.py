"""Ingest validation: one test per rule; every failure is one line naming file, row/column, expectation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten.core.errors import PipelineError
from rakuten.data.ingest import load_catalog
from tests.helpers.stagerun import error_lines, run_stage_script


@pytest.fixture
def raw(tiny_sample, tmp_path) -> Path:
    """A writable copy of the tiny catalog in the official layout."""
    dst = tmp_path / "raw"
    shutil.copytree(tiny_sample, dst)
    return dst


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)


def _fails(root: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(PipelineError) as info:
        load_catalog(root, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_valid_catalog_columns_and_counts(tiny_catalog):
    assert list(tiny_catalog.columns) == [
        "row_id",
        "orig_index",
        "designation",
        "description",
        "productid",
        "imageid",
        "image_path",
        "image_ok",
        "prdtypecode",
        "is_official_test",
    ]
    assert tiny_catalog["row_id"].tolist() == list(range(len(tiny_catalog)))
    assert tiny_catalog["prdtypecode"][tiny_catalog["is_official_test"]].isna().all()
    assert tiny_catalog["prdtypecode"][~tiny_catalog["is_official_test"]].notna().all()
    assert tiny_catalog["image_ok"].all()


def test_missing_x_file(raw):
    (raw / "X_train_update.csv").unlink()
    _fails(raw, "X_train_update.csv", "file not found")


def test_missing_y_file(raw):
    (raw / "Y_train_CVw08PX.csv").unlink()
    _fails(raw, "Y_train_CVw08PX.csv", "file not found")


def test_renamed_column(raw):
    x = _csv(raw / "X_train_update.csv").rename(columns={"designation": "title"})
    x.to_csv(raw / "X_train_update.csv")
    _fails(raw, "X_train_update.csv", "missing column 'designation'")


def test_extra_columns_are_accepted(raw):
    x = _csv(raw / "X_train_update.csv")
    x["brand"] = "x"
    x.to_csv(raw / "X_train_update.csv")
    catalog, _ = load_catalog(raw)
    assert "brand" not in catalog.columns and len(catalog) == 600


def test_misaligned_index(raw):
    y = _csv(raw / "Y_train_CVw08PX.csv")
    y.index = [str(int(i) + 1000) if n == 3 else i for n, i in enumerate(y.index)]
    y.to_csv(raw / "Y_train_CVw08PX.csv")
    _fails(raw, "index 3 has no matching row")


def test_duplicated_index(raw):
    lines = (raw / "X_train_update.csv").read_text().splitlines()
    lines[5] = "1" + lines[5][lines[5].index(",") :]
    (raw / "X_train_update.csv").write_text("\n".join(lines) + "\n")
    _fails(raw, "X_train_update.csv", "index 1 appears more than once")


def test_unknown_label(raw):
    y = _csv(raw / "Y_train_CVw08PX.csv")
    y.iloc[7, 0] = "9999"
    y.to_csv(raw / "Y_train_CVw08PX.csv")
    _fails(raw, "Y_train_CVw08PX.csv", "row 7", "prdtypecode", "9999", "27 codes")


def test_non_integer_productid(raw):
    x = _csv(raw / "X_train_update.csv")
    x.iloc[2, x.columns.get_loc("productid")] = "abc"
    x.to_csv(raw / "X_train_update.csv")
    _fails(raw, "row 2, column productid", "not an integer")


def test_invalid_utf8(raw):
    path = raw / "X_train_update.csv"
    data = path.read_bytes().replace(b"\n", b"\n\xff\xfe", 1)
    path.write_bytes(data)
    _fails(raw, "X_train_update.csv", "line 2", "not valid UTF-8")


def test_bom_and_semicolon_delimiter_are_read(raw):
    for name in ("X_train_update.csv", "Y_train_CVw08PX.csv"):
        frame = _csv(raw / name)
        frame.to_csv(raw / name, sep=";", encoding="utf-8-sig")
    catalog, _ = load_catalog(raw)
    assert len(catalog) == 600


def test_empty_and_long_text_are_kept_and_counted(raw):
    x = _csv(raw / "X_train_update.csv")
    x.iloc[0, 0] = ""
    x.iloc[1, 1] = "mot " * 250_000  # 1 MB description
    x.to_csv(raw / "X_train_update.csv")
    catalog, report = load_catalog(raw)
    assert report.empty_designation == 1 and catalog.loc[0, "designation"] == ""
    assert len(catalog.loc[1, "description"]) == 1_000_000


def _first_image(raw: Path) -> Path:
    x = _csv(raw / "X_train_update.csv")
    return raw / "images" / "image_train" / f"image_{x.iloc[4]['imageid']}_product_{x.iloc[4]['productid']}.jpg"


@pytest.mark.param_effect("ingest.on_bad_image")
def test_missing_image_stops_or_is_flagged(raw):
    _first_image(raw).unlink()
    _fails(raw, "image missing", "X_train_update.csv row 4", "ingest.on_bad_image")
    catalog, report = load_catalog(raw, on_bad_image="flag")
    assert report.images_missing == 1 and not catalog.loc[4, "image_ok"] and len(catalog) == 600


@pytest.mark.parametrize("content", [b"", b"GIF" * 3, b"not an image at all"])
def test_zero_byte_or_non_image_file(raw, content):
    _first_image(raw).write_bytes(content)
    _fails(raw, "image unreadable", "row 4")
    _, report = load_catalog(raw, on_bad_image="flag")
    assert report.images_unreadable == 1


def test_stage_prints_one_error_line(raw, tmp_path):
    (raw / "Y_train_CVw08PX.csv").unlink()
    result = run_stage_script("ingest", tmp_path / "work", {"data.source": "raw", "data.raw_dir": str(raw)})
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: {raw / 'Y_train_CVw08PX.csv'}: file not found; expected the official layout (see docs/data.md)"
    ]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "work" / "data" / "interim" / "catalog.parquet").exists()


def test_stage_writes_catalog_and_report(raw, tmp_path):
    result = run_stage_script("ingest", tmp_path / "work", {"data.source": "raw", "data.raw_dir": str(raw)})
    assert result.returncode == 0, result.stderr
    catalog = pd.read_parquet(tmp_path / "work" / "data" / "interim" / "catalog.parquet")
    assert len(catalog) == 600 and np.array_equal(catalog["row_id"], np.arange(600))


def test_unknown_source_is_a_params_error(tmp_path):
    result = run_stage_script("ingest", tmp_path / "work", {"data.source": "kaggle"})
    assert result.returncode == 2
    assert error_lines(result) == ["error: params.yaml: data.source = 'kaggle', expected one of sample, raw"]


def _with_header(path: Path, header: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n")


def test_an_extra_column_named_with_semicolons_does_not_make_a_semicolon_file(raw):
    """Counting alone read this header as ';'-separated (6 ';' vs 5 ',') and reported columns that do not exist."""
    x = _csv(raw / "X_train_update.csv")
    x["notes;a;b;c;d;e;f"] = "n"
    x.to_csv(raw / "X_train_update.csv")
    catalog, _ = load_catalog(raw)
    assert len(catalog) == 600


def test_a_semicolon_header_cell_is_explained_in_the_error(raw):
    path = raw / "X_train_update.csv"
    _with_header(path, ",designation,description;a;b;c;d;e,productid,imageid")
    message = _fails(raw)
    assert message == (
        f"{path}: header read as ','-separated (5 ';', 4 ',' in the first line; no delimiter gives all "
        "the expected columns): missing column 'description'; expected columns <index>, designation, "
        "description, productid, imageid (found: designation, description;a;b;c;d;e, productid, "
        "imageid)"
    )

"""The official-layout reader (rakuten.data.ingest) on small hand-written files (docs/mutation.md)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from rakuten.core.errors import PipelineError
from rakuten.data import ingest as C

REQ = ("a", "b")


def write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read(tmp_path: Path, text: str, required=REQ) -> pd.DataFrame:
    return C.read_official_csv(write(tmp_path, text), required)


def fails(tmp_path: Path, text: str, message: str, required=REQ, from_none: bool = False) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PipelineError, match=message) as info:
        C.read_official_csv(path, required)
    assert str(info.value).startswith(f"{path}: ")
    if from_none:  # raised while handling a parser error: no chained traceback
        assert info.value.__cause__ is None and info.value.__suppress_context__


# --------------------------------------------------------------------------- read_official_csv


def test_reads_the_required_columns_in_order_with_the_integer_index(tmp_path):
    df = read(tmp_path, ",b,c,a\n0,x,y,z\n5,,w,v\n")
    assert df.columns.tolist() == ["a", "b"]  # required order, extra column dropped
    assert df.index.tolist() == [0, 5] and df.index.dtype == np.int64
    assert df.loc[0].tolist() == ["z", "x"]
    assert df.loc[5, "a"] == "v" and pd.isna(df.loc[5, "b"])  # empty field -> missing
    assert df.loc[0, "a"] == "z" and isinstance(df.loc[0, "a"], str)


def test_keeps_text_that_looks_like_numbers_or_na(tmp_path):
    df = read(tmp_path, ",a,b\n1,007,NA\n2,1e3,None\n")
    assert df["a"].tolist() == ["007", "1e3"] and df["b"].tolist() == ["NA", "None"]


@pytest.mark.parametrize(
    "text",
    [
        "a,b\n3,x,y\n",  # implicit index (pandas' to_csv(index_label=False)): header one field short
        "\ufeff,a,b\n3,x,y\n",  # BOM
        ",a,b\r\n3,x,y\r\n",  # CRLF
        ",a,b\r3,x,y\r",  # old-Mac CR
        ";a;b\n3;x;y\n",  # other delimiters, sniffed from the header
        "\ta\tb\n3\tx\ty\n",
        "|a|b\n3|x|y\n",
        ",a,b\n+003,x,y\n",  # "+", leading zeros
    ],
)
def test_layout_variants(tmp_path, text):
    df = read(tmp_path, text)
    assert df.index.tolist() == [3] and df.loc[3].tolist() == ["x", "y"]


def test_delimiter_inside_fields_and_quoted_newlines(tmp_path):
    df = read(tmp_path, ';a;b\n1;x,y;"multi\nline"\n')
    assert df.loc[1].tolist() == ["x,y", "multi\nline"]
    df = read(tmp_path, ',a,b\n1,"x,y",z\n')  # a tie on the header: "," (first of ,;\t|)
    assert df.loc[1].tolist() == ["x,y", "z"]


def test_a_short_row_has_missing_fields(tmp_path):
    df = read(tmp_path, ",a,b\n1,x\n")
    assert df.loc[1, "a"] == "x" and pd.isna(df.loc[1, "b"])


def test_missing_directory_and_file_messages(tmp_path):
    with pytest.raises(
        PipelineError,
        match=r"^.*nope\.csv: file not found; expected the official layout \(see "
        r"docs/data\.md\)$",
    ):
        C.read_official_csv(tmp_path / "nope.csv", REQ)
    with pytest.raises(PipelineError, match=r": not a regular file; expected a CSV file$"):
        C.read_official_csv(tmp_path, REQ)


def test_invalid_utf8_names_the_line_and_byte(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b",a,b\n1,x,y\n2,\xff,z\n")
    with pytest.raises(
        PipelineError,
        match=r"bad\.csv: line 3: bytes are not valid UTF-8 \(byte 13\); expected a "
        r"UTF-8 CSV$",
    ):
        C.read_official_csv(path, REQ)
    path.write_bytes(b"\xff,a,b\n")
    with pytest.raises(PipelineError, match=r"bad\.csv: line 1: bytes are not valid UTF-8 \(byte 0\)"):
        C.read_official_csv(path, REQ)


def test_parse_errors(tmp_path):
    fails(tmp_path, "  \n\n", r": file is empty; expected a header and rows$")
    fails(
        tmp_path,
        ",a,b\n0,x,y,extra\n",
        r": cannot parse CSV: Error tokenizing data\. C error: Expected 3 fields in "
        r"line 2, saw 4; expected every row to have the header's fields$",
        from_none=True,
    )
    fails(
        tmp_path,
        ",a,a,b\n0,x,y,z\n",
        r": column 'a' appears more than once in the header; expected each column "
        r"once$",
    )
    assert read(tmp_path, ",a,b,,\n0,x,y,1,2\n").loc[0].tolist() == ["x", "y"]  # unnamed extras are not "repeated"


def test_missing_column_lists_what_was_found(tmp_path):
    fails(tmp_path, ",a, c\n0,x,y\n", r": missing column 'b'; expected columns <index>, a, b \(found: a, ' c'\)$")
    fails(tmp_path, ",a,\n0,x,y\n", r": missing column 'b'; expected columns <index>, a, b \(found: a, ''\)$")
    fails(tmp_path, ",c,d\n0,x,y\n", r": missing column 'a'; expected columns <index>, a, b \(found: c, d\)$")
    fails(tmp_path, ',a,"b\nc"\n0,x,y\n', r"\(found: a, b\\nc\)$")  # a line break in a name: escaped


def test_index_errors(tmp_path):
    fails(tmp_path, ",a,b\n0,x,y\n0,p,q\n", r": index 0 appears more than once; expected unique row indices$")
    fails(
        tmp_path,
        ",a,b\n1,x,y\nx1,x,y\n",
        r": data row 2, column index: 'x1' is not an integer id; expected a "
        r"whole number in \[0, 2\*\*63 - 1\]$",
    )
    fails(
        tmp_path,
        ",a,b\n9223372036854775808,x,y\n",
        r": data row 1, column index: '9223372036854775808' is out of "
        r"range; expected a whole number in \[0, 2\*\*63 - 1\]$",
    )
    assert read(tmp_path, ",a,b\n9223372036854775807,x,y\n").index.tolist() == [2**63 - 1]


# --------------------------------------------------------------------------- exact_integers and helpers


def test_exact_integers_values(tmp_path):
    values = pd.Series(
        ["0", "+12", "007", " 42 ", "9007199254740993", "3.0", "5.", "9223372036854775807"],
        index=[10, 11, 12, 13, 14, 15, 16, 17],
    )
    out = C.exact_integers(values, tmp_path / "x.csv", "productid")
    assert out.dtype == np.int64
    assert out.tolist() == [0, 12, 7, 42, 2**53 + 1, 3, 5, 2**63 - 1]  # never through float
    assert C.exact_integers(pd.Series(["1.0"], index=[4]), tmp_path, "c").tolist() == [1]  # one zero fraction
    assert C.exact_integers(pd.Series([], dtype=object), tmp_path, "c").tolist() == []


@pytest.mark.parametrize(
    "value, shown",
    [
        ("1.5", "'1.5'"),
        ("-3", "'-3'"),
        ("1e3", "'1e3'"),
        ("", "''"),
        (None, "an empty value"),
        ("١٢", "'١٢'"),
        ("12a", "'12a'"),
        ("x" * 50, "'" + "x" * 36 + "..."),
    ],
)
def test_exact_integers_rejects(tmp_path, value, shown):
    values = pd.Series(["1", value], index=[7, 9], dtype=object)
    expected = (
        rf"^{tmp_path}/x\.csv: row 9, column imageid: {shown.replace('.', '[.]')} is not an integer id; "
        r"expected a whole number in \[0, 2\*\*63 - 1\]$"
    )
    with pytest.raises(PipelineError, match=expected):
        C.exact_integers(values, tmp_path / "x.csv", "imageid")


def test_exact_integers_out_of_range(tmp_path):
    for value in ("9223372036854775808", "12345678901234567890", "00000000000000000000009223372036854775808"):
        with pytest.raises(
            PipelineError,
            match=r": line 3, column c: '[0-9.]+'? is out of range; expected a whole "
            r"number in \[0, 2\*\*63 - 1\]$",
        ):
            C.exact_integers(pd.Series(["1", value], index=[2, 3]), tmp_path, "c", row_word="line")
    # 20 digits after the leading zeros are dropped: still in range when the value is
    assert C.exact_integers(pd.Series(["000000000000000000001"]), tmp_path, "c").tolist() == [1]


def test_implicit_index():
    assert C._implicit_index("a,b\n0,x,y\n", ",", REQ) is True
    assert C._implicit_index(",a,b\n0,x,y\n", ",", REQ) is False  # the index has a (empty) name
    assert C._implicit_index("a,b\n0,x\n", ",", REQ) is False  # rows as long as the header
    assert C._implicit_index("a,b\n", ",", REQ) is False  # no data row
    assert C._implicit_index("c,b\n0,x,y\n", ",", REQ) is False  # first cell not a required column
    assert C._implicit_index("", ",", REQ) is False
    assert C._implicit_index("a;b\n0;x;y\n", ";", REQ) is True
    assert C._implicit_index("a,b\n0,x,\0y\n", ",", REQ) in (True, False)  # NUL: csv.Error or read, never raises


def test_one_line_and_shown():
    assert C._one_line("a\r\nb\nc") == "a\\r\\nb\\nc"
    assert C._shown(None) == C._shown(pd.NA) == C._shown(float("nan")) == C._shown(np.nan) == "an empty value"
    assert C._shown("abc") == "'abc'" and C._shown(12) == "12"
    assert C._shown("x" * 38) == "'" + "x" * 38 + "'"  # 40 characters: kept
    assert C._shown("x" * 39) == "'" + "x" * 36 + "..."  # 41: cut to 37 + "..."


# --------------------------------------------------------------------------- labels and rows


def test_validate_labels(tmp_path):
    x = pd.DataFrame({"designation": ["p", "q", "r"]}, index=[5, 3, 9])
    y = pd.DataFrame({"prdtypecode": ["40", "10", "2905"]}, index=[3, 5, 9])
    codes = C.validate_labels(x, y, tmp_path / "X.csv", tmp_path / "Y.csv")
    assert codes.tolist() == [10, 40, 2905] and codes.dtype == np.int64  # aligned to x's order
    with pytest.raises(
        PipelineError,
        match=r"X\.csv: index 9 has no matching row in Y\.csv; expected X and Y to "
        r"share one index$",
    ):
        C.validate_labels(x, y.iloc[:2], tmp_path / "X.csv", tmp_path / "Y.csv")
    with pytest.raises(PipelineError, match=r"Y\.csv: index 4 has no matching row in X\.csv; expected"):
        C.validate_labels(
            x, pd.concat([y, pd.DataFrame({"prdtypecode": ["10"]}, index=[4])]), tmp_path / "X.csv", tmp_path / "Y.csv"
        )
    y_bad = y.copy()
    y_bad.loc[9, "prdtypecode"] = "11"
    with pytest.raises(PipelineError, match=r"Y\.csv: row 9, column prdtypecode: 11 is not one of the 27 codes$"):
        C.validate_labels(x, y_bad, tmp_path / "X.csv", tmp_path / "Y.csv")
    y_bad.loc[9, "prdtypecode"] = "ten"
    with pytest.raises(PipelineError, match=r"Y\.csv: row 9, column prdtypecode: 'ten' is not an integer id"):
        C.validate_labels(x, y_bad, tmp_path / "X.csv", tmp_path / "Y.csv")


def jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", np.full((20, 20, 3), 200, np.uint8))[1].tobytes())


def test_image_status(tmp_path):
    jpeg(tmp_path / "ok.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert C.image_status(tmp_path / "ok.jpg") == "ok"
    assert C.image_status(tmp_path / "bad.jpg") == "unreadable"
    assert C.image_status(tmp_path / "none.jpg") == "missing"
    assert C.image_status(tmp_path) == "not_a_file"


def test_catalog_rows(tmp_path):
    jpeg(tmp_path / "img" / "image_7_product_70.jpg")
    x = pd.DataFrame(
        {
            "designation": ["Lego", None],
            "description": [None, "desc"],
            "productid": ["70", "+080"],
            "imageid": ["7.0", "8"],
        },
        index=np.array([100, 101], dtype=np.int64),
    )
    rows, statuses = C.catalog_rows(
        x,
        tmp_path / "X.csv",
        tmp_path / "img",
        first_row_id=5,
        labels=np.array([10, 40]),
        path_dir="rel/img",
        is_official_test=False,
    )
    assert rows.columns.tolist() == list(C.CATALOG_COLUMNS)
    assert statuses.tolist() == ["ok", "missing"] and statuses.dtype == object
    assert rows["row_id"].tolist() == [5, 6] and rows["row_id"].dtype == np.int64
    assert rows["orig_index"].tolist() == [100, 101] and rows["orig_index"].dtype == np.int64
    assert rows["designation"].tolist() == ["Lego", ""]
    assert rows["description"].isna().tolist() == [True, False] and rows["description"].iloc[1] == "desc"
    assert rows["productid"].tolist() == [70, 80] and rows["imageid"].tolist() == [7, 8]
    assert rows["productid"].dtype == np.int64
    assert rows["image_path"].tolist() == ["rel/img/image_7_product_70.jpg", "rel/img/image_8_product_80.jpg"]
    assert rows["image_ok"].tolist() == [True, False]
    assert rows["prdtypecode"].tolist() == [10, 40] and str(rows["prdtypecode"].dtype) == "Int64"
    assert rows["is_official_test"].tolist() == [False, False]
    test_rows, _ = C.catalog_rows(x, tmp_path / "X.csv", tmp_path / "img")
    assert test_rows["row_id"].tolist() == [0, 1] and test_rows["is_official_test"].tolist() == [True, True]
    assert test_rows["prdtypecode"].isna().all() and str(test_rows["prdtypecode"].dtype) == "Int64"
    assert test_rows["image_path"].tolist()[0] == (tmp_path / "img" / "image_7_product_70.jpg").as_posix()
    bad = x.copy()
    bad.loc[101, "imageid"] = "8b"
    with pytest.raises(PipelineError, match=r"X\.csv: row 101, column imageid: '8b' is not an integer id"):
        C.catalog_rows(bad, tmp_path / "X.csv", tmp_path / "img")


# --------------------------------------------------------------------------- load_catalog


def layout(root: Path, train: list[tuple], test: list[tuple], labels: list[int], images=True) -> Path:
    """Official layout: ``train``/``test`` rows are (index, designation, description, productid, imageid)."""
    root.mkdir(parents=True, exist_ok=True)

    def x_csv(rows):
        lines = [",designation,description,productid,imageid"]
        lines += [",".join(str(v) for v in r) for r in rows]
        return "\n".join(lines) + "\n"

    (root / C.X_TRAIN).write_text(x_csv(train), encoding="utf-8")
    (root / C.X_TEST).write_text(x_csv(test), encoding="utf-8")
    y = [",prdtypecode"] + [f"{r[0]},{code}" for r, code in zip(train, labels)]
    (root / C.Y_TRAIN).write_text("\n".join(y) + "\n", encoding="utf-8")
    if images:
        for rows, sub in ((train, "image_train"), (test, "image_test")):
            for r in rows:
                jpeg(root / "images" / sub / f"image_{r[4]}_product_{r[3]}.jpg")
    return root


TRAIN = [(0, "Livre", "un livre", 11, 1), (1, " ", "", 12, 2), (2, "Jeu", "", 13, 3)]
TEST = [(7, "Console", "neuve", 14, 4), (8, "Figurine", "", 15, 5)]


def test_load_catalog_table_and_report(tmp_path):
    root = layout(tmp_path / "raw", TRAIN, TEST, [10, 40, 10])
    catalog, report = C.load_catalog(root, path_prefix="data/raw")
    assert catalog.columns.tolist() == list(C.CATALOG_COLUMNS)
    assert catalog["row_id"].tolist() == [0, 1, 2, 3, 4] and catalog.index.tolist() == [0, 1, 2, 3, 4]
    assert catalog["orig_index"].tolist() == [0, 1, 2, 7, 8]
    assert catalog["is_official_test"].tolist() == [False, False, False, True, True]
    assert catalog["prdtypecode"].tolist()[:3] == [10, 40, 10] and catalog["prdtypecode"].isna().tolist()[3:] == [
        True,
        True,
    ]
    assert catalog["image_path"].tolist()[0] == "data/raw/images/image_train/image_1_product_11.jpg"
    assert catalog["image_path"].tolist()[3] == "data/raw/images/image_test/image_4_product_14.jpg"
    assert catalog["image_ok"].all()
    assert catalog["description"].isna().tolist() == [False, True, True, False, True]
    assert catalog["description"].iloc[[0, 3]].tolist() == ["un livre", "neuve"]
    assert (report.rows_train, report.rows_official_test) == (3, 2)
    assert (report.images_missing, report.images_unreadable) == (0, 0)
    assert report.missing_description == 3 and report.empty_designation == 1
    assert report.notes == [
        "1 rows with empty designation kept (e.g. index [1]); text_clean flags them and the "
        "image model still predicts them"
    ]
    default, _ = C.load_catalog(str(root))
    assert default["image_path"].tolist()[0] == (root / "images/image_train/image_1_product_11.jpg").as_posix()


def test_load_catalog_without_empty_designation_has_no_note(tmp_path):
    train = [(0, "Livre", "x", 11, 1), (1, "Jeu", "y", 12, 2)]
    _, report = C.load_catalog(layout(tmp_path / "raw", train, TEST, [10, 40]))
    assert report.empty_designation == 0 and report.notes == [] and report.missing_description == 1


def test_load_catalog_bad_images_stop_or_are_counted(tmp_path):
    root = layout(tmp_path / "raw", TRAIN, TEST, [10, 40, 10])
    (root / "images/image_train/image_2_product_12.jpg").unlink()
    (root / "images/image_test/image_5_product_15.jpg").write_bytes(b"GIF89a broken")
    with pytest.raises(
        PipelineError,
        match=r"image_2_product_12\.jpg: image missing for X_train_update\.csv row 1; "
        r"expected a readable JPEG \(set ingest\.on_bad_image: flag to keep such "
        r"rows for text-only prediction\)$",
    ):
        C.load_catalog(root)
    catalog, report = C.load_catalog(root, on_bad_image="flag")
    assert catalog["image_ok"].tolist() == [True, False, True, True, False]
    assert (report.images_missing, report.images_unreadable) == (1, 1)
    (root / "images/image_train/image_2_product_12.jpg").write_bytes(b"")
    jpeg(root / "images/image_test/image_5_product_15.jpg")
    (root / "images/image_test/image_4_product_14.jpg").unlink()
    (root / "images/image_test/image_4_product_14.jpg").mkdir()
    with pytest.raises(
        PipelineError,
        match=r"image_2_product_12\.jpg: image unreadable \(not an image this pipeline "
        r"can read\) for X_train_update\.csv row 1;",
    ):
        C.load_catalog(root)
    (root / "images/image_train/image_2_product_12.jpg").unlink()
    jpeg(root / "images/image_train/image_2_product_12.jpg")
    with pytest.raises(
        PipelineError,
        match=r"image_4_product_14\.jpg: image not a regular file for "
        r"X_test_update\.csv row 7;",
    ):
        C.load_catalog(root)
    _, report = C.load_catalog(root, on_bad_image="flag")
    assert (report.images_missing, report.images_unreadable) == (0, 1)


def test_load_catalog_layout_errors(tmp_path):
    with pytest.raises(
        PipelineError,
        match=r"nowhere: directory not found; expected the official files there \(see "
        r"docs/data\.md\)$",
    ):
        C.load_catalog(tmp_path / "nowhere")
    root = layout(tmp_path / "empty", [], TEST, [])
    with pytest.raises(
        PipelineError,
        match=r"X_train_update\.csv: a header but no rows; expected at least one "
        r"labelled product$",
    ):
        C.load_catalog(root)
    root = layout(tmp_path / "one", TRAIN, TEST, [40, 40, 40])
    with pytest.raises(
        PipelineError,
        match=r"Y_train_CVw08PX\.csv: every labelled row has class 40; expected at "
        r"least 2 classes to train a classifier$",
    ):
        C.load_catalog(root)
    root = layout(tmp_path / "overlap", TRAIN, [(2, "x", "", 16, 6)], [10, 40, 10])
    with pytest.raises(
        PipelineError,
        match=r"X_test_update\.csv: index 2 also appears in X_train_update\.csv; "
        r"expected disjoint indices$",
    ):
        C.load_catalog(root)


def test_delimiter_is_sniffed_from_the_header_line_only(tmp_path):
    # the data row holds more ';' than ',' in a quoted field: the header's ',' still decides
    df = read(tmp_path, ',a,b\n1,"p;q;r;s;t;u;v;w;x;y",v\n2,"x;y",z\n')
    assert df.loc[1].tolist() == ["p;q;r;s;t;u;v;w;x;y", "v"] and df.loc[2].tolist() == ["x;y", "z"]
    df = read(tmp_path, ',a,b\r\n1,"p;q;r;s;t;u",v\r\n')
    assert df.loc[1].tolist() == ["p;q;r;s;t;u", "v"]


def test_catalog_rows_name_the_file_for_a_bad_productid(tmp_path):
    x = pd.DataFrame(
        {"designation": ["a"], "description": [None], "productid": ["p1"], "imageid": ["1"]}, index=np.array([3])
    )
    with pytest.raises(PipelineError, match=r"X\.csv: row 3, column productid: 'p1' is not an integer id"):
        C.catalog_rows(x, tmp_path / "X.csv", tmp_path / "img")


def test_load_catalog_errors_name_the_file(tmp_path):
    root = layout(tmp_path / "a", TRAIN, TEST, [10, 40, 10])
    (root / C.Y_TRAIN).write_text(",prdtypecode\n0,10\n2,10\n", encoding="utf-8")
    with pytest.raises(
        PipelineError,
        match=r"a/X_train_update\.csv: index 1 has no matching row in "
        r"Y_train_CVw08PX\.csv;",
    ):
        C.load_catalog(root)
    root = layout(tmp_path / "b", [(0, "x", "", "p9", 1), (1, "y", "", 2, 2)], TEST, [10, 40], images=False)
    with pytest.raises(PipelineError, match=r"b/X_train_update\.csv: row 0, column productid: 'p9' is not an integer"):
        C.load_catalog(root)
    root = layout(tmp_path / "c", TRAIN, [(7, "x", "", 14, "4x")], [10, 40, 10], images=False)
    with pytest.raises(PipelineError, match=r"c/X_test_update\.csv: row 7, column imageid: '4x' is not an integer"):
        C.load_catalog(root)
    root = layout(tmp_path / "d", TRAIN[:1], TEST, [10])
    with pytest.raises(
        PipelineError,
        match=r"Y_train_CVw08PX\.csv: every labelled row has class 10; expected at "
        r"least 2 classes",
    ):
        C.load_catalog(root)


def test_load_catalog_note_lists_at_most_five_empty_designations(tmp_path):
    train = [(i + 10, " " if i < 7 else "Jeu", "", 20 + i, i) for i in range(9)]
    _, report = C.load_catalog(layout(tmp_path / "raw", train, TEST, [10] * 8 + [40]))
    assert report.empty_designation == 7
    assert report.notes == [
        "7 rows with empty designation kept (e.g. index [10, 11, 12, 13, 14]); text_clean flags "
        "them and the image model still predicts them"
    ]

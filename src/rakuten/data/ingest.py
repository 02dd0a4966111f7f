"""Loading and validating the official file layout (docs/data.md) into one catalog table.

Everything is checked before anything is written; each violation is a :class:`PipelineError`
whose single line names the file, the row (original index) or column, and what was expected.

Catalog columns (``data/interim/catalog.parquet``):
``row_id`` (0..n-1, train rows then official test rows), ``orig_index`` (the CSV's unnamed index),
``designation``, ``description`` (None when missing), ``productid``, ``imageid``, ``image_path``
(relative to the repository root), ``image_ok`` (file present with an image signature),
``prdtypecode`` (nullable Int64, empty for official test rows), ``is_official_test``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten.contracts.classes import CLASS_CODES
from rakuten.core.errors import PipelineError
from rakuten.core.image_files import STATUS_TEXT, probe_image

log = logging.getLogger(__name__)

X_TRAIN = "X_train_update.csv"
Y_TRAIN = "Y_train_CVw08PX.csv"
X_TEST = "X_test_update.csv"
IMAGE_DIRS = {False: "images/image_train", True: "images/image_test"}
X_COLUMNS = ("designation", "description", "productid", "imageid")
Y_COLUMNS = ("prdtypecode",)
MAX_ID = 2**63 - 1  # ids are stored as int64
# an integer written as text, optionally with a "+", leading zeros or a ".0" fraction (a spreadsheet export)
_INTEGER = r"^\s*\+?0*([0-9]+)(\.0*)?\s*$"  # ASCII digits only: '١٢' is not read as 12
_DELIMITERS = ",;\t|"
CATALOG_COLUMNS = (
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
)


@dataclass
class IngestReport:
    """Row accounting and notes for ``reports/ingest.json``."""

    rows_train: int = 0
    rows_official_test: int = 0
    empty_designation: int = 0
    missing_description: int = 0
    images_missing: int = 0
    images_unreadable: int = 0
    notes: list[str] = field(default_factory=list)


def read_official_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read one official CSV: UTF-8 (a BOM is accepted), delimiter sniffed, first column the index.

    Extra columns are accepted and dropped with a note; missing ones are an error.
    """
    if not path.exists():
        raise PipelineError(f"{path}: file not found; expected the official layout (see docs/data.md)")
    if not path.is_file():  # a directory, a FIFO (never read: it could block forever), a device
        raise PipelineError(f"{path}: not a regular file; expected a CSV file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PipelineError(
            f"{path}: line {line}: bytes are not valid UTF-8 (byte {exc.start}); expected a UTF-8 CSV"
        ) from None
    if not text.strip():
        raise PipelineError(f"{path}: file is empty; expected a header and rows")
    header = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]  # LF, CRLF or old-Mac CR line ends
    delimiter, why = _delimiter(header, required)
    if _implicit_index(text, delimiter, required):
        text = delimiter + text  # give the index column its empty header name: then every row must fit the header
    try:  # header=None: a data row with more fields than the header is an error, never a shifted index
        table = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            quoting=csv.QUOTE_MINIMAL,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise PipelineError(
            f"{path}: cannot parse CSV: {_one_line(str(exc).splitlines()[0])}; expected every "
            "row to have the header's fields"
        ) from None
    names = ["" if pd.isna(n) else str(n) for n in table.iloc[0].tolist()][1:]  # the first column is the index
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise PipelineError(
            f"{path}: column {_one_line(repeated[0])!r} appears more than once in the header; expected each column once"
        )
    df = table.iloc[1:, 1:].set_axis(names, axis=1).set_axis(table.iloc[1:, 0].tolist(), axis=0)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PipelineError(
            f"{path}: {why}missing column '{missing[0]}'; "
            f"expected columns <index>, {', '.join(required)} "
            f"(found: {', '.join(_one_line(repr(c) if c != c.strip() or not c else c) for c in names)})"
        )
    if delimiter != ",":
        log.warning("%s: delimiter %r instead of ','; read anyway", path, delimiter)
    # a bad index value is named by its position among the data rows (1 = the first row after the header)
    df.index = exact_integers(pd.Series(df.index, index=np.arange(1, len(df) + 1)), path, "index", row_word="data row")
    dup = df.index.duplicated()
    if dup.any():
        raise PipelineError(f"{path}: index {df.index[dup][0]} appears more than once; expected unique row indices")
    return df[list(required)]


def exact_integers(values: pd.Series, path: Path, column: str, row_word: str = "row") -> np.ndarray:
    """int64 ids parsed from their text, exactly (never through float: 2**53 + 1 stays itself).

    Accepted: digits, with an optional ``+``, leading zeros or ``.0`` fraction (counted and logged:
    a spreadsheet export writes ``123.0``). Anything else, or a value outside ``[0, 2**63 - 1]``, is
    one line naming the file, the row (the series' index), the column and the value.
    """
    text = values.astype("string")
    found = text.str.extract(_INTEGER, expand=True)
    ok = found[0].notna().to_numpy(bool)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise PipelineError(
            f"{path}: {row_word} {values.index[i]}, column {column}: {_shown(values.iloc[i])} is not an "
            "integer id; expected a whole number in [0, 2**63 - 1]"
        )
    out = np.empty(len(values), np.int64)
    for i, digits in enumerate(found[0].tolist()):
        if len(digits) > 19 or int(digits) > MAX_ID:
            raise PipelineError(
                f"{path}: {row_word} {values.index[i]}, column {column}: {_shown(values.iloc[i])} is out "
                "of range; expected a whole number in [0, 2**63 - 1]"
            )
        out[i] = int(digits)
    fraction = found[1].notna().to_numpy(bool)
    if fraction.any():
        i = int(np.flatnonzero(fraction)[0])
        log.warning(
            "%s: %d value(s) of %s written with a zero fraction (e.g. %s %s: %r) read as whole numbers",
            path,
            int(fraction.sum()),
            column,
            row_word,
            values.index[i],
            values.iloc[i],
        )
    return out


def _header_fields(header: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([header], delimiter=delimiter), [])
    except csv.Error:
        return []


def _delimiter(header: str, required: tuple[str, ...]) -> tuple[str, str]:
    """The delimiter of a CSV from its header line, and, when the header holds several candidates,
    the words that explain the choice in a missing-column error (else ``""``).

    Why: counting alone reads ``,designation,description;a;b;c;d;e,...`` (a column name with
    semicolons) as a ``;``-separated file and then reports columns that do not exist. So among
    the candidates present, the one whose header fields hold the most required columns wins
    (all of them, normally); the more frequent one breaks ties."""
    counts = {d: header.count(d) for d in _DELIMITERS if header.count(d)}
    if not counts:
        return ",", ""
    found = {d: sum(name in _header_fields(header, d) for name in required) for d in counts}
    delimiter = max(counts, key=lambda d: (found[d], counts[d], -_DELIMITERS.index(d)))
    if len(counts) == 1:
        return delimiter, ""
    tally = ", ".join(f"{n} {d!r}" for d, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return delimiter, (
        f"header read as {delimiter!r}-separated ({tally} in the first line; no delimiter gives all "
        "the expected columns): "
    )


def _implicit_index(text: str, delimiter: str, required: tuple[str, ...]) -> bool:
    """True for a header that names every column but the index (``designation,...`` over rows
    ``0,...``: pandas' implicit index), recognised by its first cell being a required column and
    the first row having one field more. Any other header over longer rows is refused: there (e.g.
    ``,designation,...`` over ``0,Lego,extra,...``) which field is extra cannot be known."""
    try:
        records = csv.reader(io.StringIO(text), delimiter=delimiter)
        first, second = next(records, []), next(records, None)
    except csv.Error:
        return False
    return bool(first) and first[0] in required and second is not None and len(second) == len(first) + 1


def _one_line(text: str) -> str:
    """``text`` with line breaks escaped, so a message naming it stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _shown(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "an empty value"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer_column(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    return exact_integers(df[column], path, column)


def validate_labels(x: pd.DataFrame, y: pd.DataFrame, x_path: Path, y_path: Path) -> np.ndarray:
    """Labels aligned to ``x``'s index; misaligned indices or unknown codes are errors."""
    only_x = x.index.difference(y.index)
    only_y = y.index.difference(x.index)
    if len(only_x) or len(only_y):
        where, idx = (x_path, only_x[0]) if len(only_x) else (y_path, only_y[0])
        raise PipelineError(
            f"{where}: index {idx} has no matching row in "
            f"{y_path.name if where == x_path else x_path.name}; expected X and Y to share one index"
        )
    codes = _integer_column(y.loc[x.index], "prdtypecode", y_path)
    unknown = ~np.isin(codes, CLASS_CODES)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise PipelineError(f"{y_path}: row {x.index[i]}, column prdtypecode: {codes[i]} is not one of the 27 codes")
    return codes


def image_status(path: Path) -> str:
    """``ok``, ``missing``, ``unreadable``, ``not_a_file`` or ``oversized``, from the file's header
    (:func:`rakuten.core.image_files.probe_image`: the one guarded reader, so a FIFO never blocks)."""
    return probe_image(path)


def catalog_rows(
    x: pd.DataFrame,
    x_path: Path,
    image_dir: str | Path,
    *,
    is_official_test: bool = True,
    first_row_id: int = 0,
    labels: np.ndarray | None = None,
    path_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of an X-layout CSV (as :func:`read_official_csv` returns them) as catalog rows.

    The one conversion used by ``ingest`` (the training catalog) and ``rakuten predict`` (new
    products), so both give the models the same columns and values. Images are looked up as
    ``<image_dir>/image_<imageid>_product_<productid>.jpg`` and written to ``image_path`` under
    ``path_dir`` (default ``image_dir``). Returns the rows (:data:`CATALOG_COLUMNS`; ``row_id`` from
    ``first_row_id``; ``prdtypecode`` from ``labels``, else empty) and each image's
    :func:`image_status`. A non-integer id is one line naming ``x_path``, the row and the column.
    """
    image_dir = Path(image_dir)
    path_dir = Path(path_dir) if path_dir is not None else image_dir
    productid = _integer_column(x, "productid", x_path)
    imageid = _integer_column(x, "imageid", x_path)
    names = [f"image_{i}_product_{p}.jpg" for i, p in zip(imageid, productid)]
    statuses = np.array([image_status(image_dir / name) for name in names], dtype=object)
    rows = pd.DataFrame(
        {
            "row_id": np.arange(first_row_id, first_row_id + len(x), dtype=np.int64),
            "orig_index": x.index.to_numpy(np.int64),
            "designation": x["designation"].fillna("").astype(str).to_numpy(),
            "description": x["description"].astype(object).where(x["description"].notna(), None).to_numpy(),
            "productid": productid,
            "imageid": imageid,
            "image_path": [(path_dir / name).as_posix() for name in names],
            "image_ok": statuses == "ok",
            "prdtypecode": pd.array([None] * len(x) if labels is None else list(labels), dtype="Int64"),
            "is_official_test": is_official_test,
        }
    )
    return rows[list(CATALOG_COLUMNS)], statuses


def load_catalog(root: str | Path, on_bad_image: str = "error", path_prefix: str | None = None):
    """Validate the official layout under ``root`` and return ``(catalog, report)``.

    ``on_bad_image``: ``error`` stops at the first missing/unreadable image with one line;
    ``flag`` keeps the row with ``image_ok = False`` (counted) so the text models still predict it.
    ``path_prefix`` is how image paths are written (default: ``root`` as given).
    """
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"{root}: directory not found; expected the official files there (see docs/data.md)")
    x_train, x_test, codes = read_official_tables(root)
    prefix = Path(path_prefix) if path_prefix is not None else root
    train, train_status = catalog_rows(
        x_train,
        root / X_TRAIN,
        root / IMAGE_DIRS[False],
        labels=codes,
        path_dir=prefix / IMAGE_DIRS[False],
        is_official_test=False,
    )
    test, test_status = catalog_rows(
        x_test,
        root / X_TEST,
        root / IMAGE_DIRS[True],
        first_row_id=len(train),
        path_dir=prefix / IMAGE_DIRS[True],
        is_official_test=True,
    )
    catalog = pd.concat([train, test], ignore_index=True)
    statuses = np.concatenate([train_status, test_status])
    if on_bad_image == "error":
        refuse_bad_images(catalog, statuses)
    return catalog, ingest_report(catalog, statuses, len(x_train), len(x_test))


def read_official_tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """``(X_train, X_test, train labels)`` read and checked against each other (one line per problem)."""
    x_train = read_official_csv(root / X_TRAIN, X_COLUMNS)
    y_train = read_official_csv(root / Y_TRAIN, Y_COLUMNS)
    x_test = read_official_csv(root / X_TEST, X_COLUMNS)
    if not len(x_train):
        raise PipelineError(f"{root / X_TRAIN}: a header but no rows; expected at least one labelled product")
    codes = validate_labels(x_train, y_train, root / X_TRAIN, root / Y_TRAIN)
    if len(np.unique(codes)) < 2:
        raise PipelineError(
            f"{root / Y_TRAIN}: every labelled row has class {codes[0]}; expected at least 2 "
            "classes to train a classifier"
        )
    overlap = x_train.index.intersection(x_test.index)
    if len(overlap):
        raise PipelineError(f"{root / X_TEST}: index {overlap[0]} also appears in {X_TRAIN}; expected disjoint indices")
    return x_train, x_test, codes


def refuse_bad_images(catalog: pd.DataFrame, statuses: np.ndarray) -> None:
    """One line naming the first row whose image is missing or unreadable (``on_bad_image: error``)."""
    bad = np.flatnonzero(statuses != "ok")
    if len(bad):
        i = int(bad[0])
        split_file = X_TEST if catalog.at[i, "is_official_test"] else X_TRAIN
        raise PipelineError(
            f"{catalog.at[i, 'image_path']}: image {STATUS_TEXT[statuses[i]]} for {split_file} row "
            f"{catalog.at[i, 'orig_index']}; expected a readable JPEG "
            "(set ingest.on_bad_image: flag to keep such rows for text-only prediction)"
        )


def ingest_report(catalog: pd.DataFrame, statuses: np.ndarray, rows_train: int, rows_test: int) -> IngestReport:
    """Row accounting of the ingested catalog: images missing or unreadable, empty texts (with a note)."""
    report = IngestReport()
    report.rows_train = rows_train
    report.rows_official_test = rows_test
    report.images_missing = int((statuses == "missing").sum())
    report.images_unreadable = int(((statuses != "ok") & (statuses != "missing")).sum())
    report.missing_description = int(catalog["description"].isna().sum())
    empty = catalog["designation"].str.strip() == ""
    report.empty_designation = int(empty.sum())
    if report.empty_designation:
        rows = catalog.loc[empty, "orig_index"].head(5).tolist()
        report.notes.append(
            f"{report.empty_designation} rows with empty designation kept (e.g. index {rows}); "
            "text_clean flags them and the image model still predicts them"
        )
        log.warning(report.notes[-1])
    return report

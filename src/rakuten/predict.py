"""Prediction with the trained artifacts: the submission file and batch prediction on new products.

Both paths go through the same saved fused model (``models/fusion/``), so the submission and the
``rakuten predict`` command give the same answer for the same inputs. A product with empty text or
a missing image is still classified, from the models whose input it has (see
:class:`rakuten.fusion.FusedModel`), and the ``inputs_used`` column says so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from rakuten import fusion
from rakuten.classes import CLASS_LABELS, indices_to_codes
from rakuten.data.catalog import X_COLUMNS, image_status, read_official_csv
from rakuten.errors import PipelineError
from rakuten.models import registry

log = logging.getLogger(__name__)

TOP_K = 3


def submission_frame(official_rows: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
    """The challenge's file: the X_test index (unnamed) and ``prdtypecode``, one row per X_test row.

    ``official_rows`` are the catalog's official-test rows (``orig_index``) in the order of ``proba``.
    """
    if len(official_rows) != len(proba):
        raise PipelineError(f"submission: {len(official_rows)} official test rows but {len(proba)} predictions")
    index = official_rows["orig_index"].to_numpy(dtype=np.int64)
    if len(np.unique(index)) != len(index):
        raise PipelineError("submission: duplicate X_test index values; expected one prediction per row")
    codes = indices_to_codes(np.asarray(proba).argmax(axis=1))
    return pd.DataFrame({"prdtypecode": codes}, index=pd.Index(index, name=None)).sort_index()


def prediction_table(orig_index: np.ndarray, proba: np.ndarray, inputs_used: list[str], k: int = TOP_K) -> pd.DataFrame:
    """Predicted code and label, the top-``k`` codes with probabilities, and the inputs used, per row."""
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    codes = indices_to_codes(order)
    out = pd.DataFrame({"prdtypecode": codes[:, 0], "label": [CLASS_LABELS[int(c)] for c in codes[:, 0]]},
                       index=pd.Index(np.asarray(orig_index, dtype=np.int64), name=None))
    for j in range(k):
        out[f"top{j + 1}_code"] = codes[:, j]
        out[f"top{j + 1}_proba"] = np.round(np.take_along_axis(proba, order[:, j:j + 1], axis=1)[:, 0], 6)
    out["inputs_used"] = inputs_used
    return out


def catalog_rows(x: pd.DataFrame, image_dir: str | Path) -> pd.DataFrame:
    """New products (X_test layout, indexed by the original index) as catalog rows.

    Images are looked up as ``<image_dir>/image_<imageid>_product_<productid>.jpg``; a missing or
    unreadable file only sets ``image_ok`` to False (the text models still predict the row).
    """
    image_dir = Path(image_dir)
    ids = {}
    for col in ("productid", "imageid"):
        values = pd.to_numeric(x[col], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            row = x.index[int(np.flatnonzero(bad.to_numpy())[0])]
            raise PipelineError(f"row {row}, column {col}: {x.loc[row, col]!r} is not an integer")
        ids[col] = values.astype(np.int64).to_numpy()
    paths = [image_dir / f"image_{i}_product_{p}.jpg" for i, p in zip(ids["imageid"], ids["productid"])]
    return pd.DataFrame({
        "row_id": np.arange(len(x), dtype=np.int64),
        "orig_index": x.index.to_numpy(dtype=np.int64),
        "designation": x["designation"].fillna("").astype(str).to_numpy(dtype=object),
        "description": x["description"].astype(object).where(x["description"].notna(), None).to_numpy(),
        "productid": ids["productid"],
        "imageid": ids["imageid"],
        "image_path": [p.as_posix() for p in paths],
        "image_ok": [image_status(p) == "ok" for p in paths],
        "prdtypecode": pd.array([None] * len(x), dtype="Int64"),
        "is_official_test": True,
    })


@dataclass
class Cleaners:
    """The cleaning functions of the text and image stages (injectable for tests)."""

    text: Callable[[pd.DataFrame, dict], pd.DataFrame]
    image: Callable[..., pd.DataFrame]


def default_cleaners() -> Cleaners:
    """The pipeline's own cleaning (``rakuten.text.pipeline`` / ``rakuten.image.pipeline``)."""
    try:
        from rakuten.image.pipeline import clean_frame as clean_images
        from rakuten.text.pipeline import clean_frame as clean_text
    except ImportError as exc:
        raise PipelineError(f"cannot import the cleaning stages ({exc}); is the package fully installed?") from None
    return Cleaners(text=clean_text, image=clean_images)


def model_frame(rows: pd.DataFrame, params: dict, work_dir: Path, cleaners: Cleaners) -> pd.DataFrame:
    """Catalog rows joined with the text and image cleaning columns, as the models expect them."""
    text = cleaners.text(rows, params.get("text_clean", {}))
    images = cleaners.image(rows, Path(work_dir) / "images", params.get("image_clean", {}), None)
    frame = rows.merge(text, on="row_id", how="left", validate="one_to_one")
    frame = frame.merge(images, on="row_id", how="left", validate="one_to_one")
    if len(frame) != len(rows):
        raise PipelineError(f"cleaning returned {len(frame)} rows for {len(rows)} inputs")
    return frame


def input_flags(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(text_ok, image_ok) per row: non-empty cleaned text; an image file found and readable."""
    text_ok = (~frame["text_empty"].fillna(True).to_numpy(dtype=bool) if "text_empty" in frame
               else np.ones(len(frame), bool))
    image_ok = frame["image_ok"].fillna(False).to_numpy(dtype=bool)
    if "readable" in frame:
        image_ok = image_ok & frame["readable"].fillna(False).to_numpy(dtype=bool)
    return text_ok, image_ok


def predict_frame(frame: pd.DataFrame, models_dir: str | Path = "models") -> tuple[np.ndarray, list[str]]:
    """Fused probabilities (n, 27) and the inputs used per row, from the saved model artifacts."""
    models_dir = Path(models_dir)
    fused = fusion.load(models_dir / "fusion")
    mats = []
    for name in fused.models:
        module = registry.load_module(name)
        model_dir = models_dir / name
        if not model_dir.exists():
            raise PipelineError(f"{model_dir}: trained model not found; run `dvc repro {name}`")
        log.info("predicting with %s", name)
        mats.append(np.asarray(module.predict_proba(module.load(model_dir), frame), dtype=np.float64))
    text_ok, image_ok = input_flags(frame)
    available = fusion.availability(fused.modalities, text_ok, image_ok)
    return fused.predict_proba(mats, available), fused.inputs_used(text_ok, image_ok)


def predict_csv(x_csv: str | Path, image_dir: str | Path, params: dict, models_dir: str | Path,
                work_dir: str | Path, cleaners: Cleaners | None = None) -> pd.DataFrame:
    """Classify the products of a CSV in the X_test layout whose images are in ``image_dir``."""
    x = read_official_csv(Path(x_csv), X_COLUMNS)
    if len(x) == 0:
        raise PipelineError(f"{x_csv}: no rows to classify")
    rows = catalog_rows(x, image_dir)
    log.info("%d products, %d without a readable image file", len(rows), int((~rows["image_ok"]).sum()))
    frame = model_frame(rows, params, Path(work_dir), cleaners or default_cleaners())
    proba, inputs = predict_frame(frame, models_dir)
    return prediction_table(rows["orig_index"].to_numpy(), proba, inputs)


def official_submission(catalog: pd.DataFrame, model: "fusion.FusedModel", tables: dict[str, pd.DataFrame],
                        text_ok: pd.Series | None = None, image_ok: pd.Series | None = None
                        ) -> tuple[pd.DataFrame, dict]:
    """Apply the saved fused model to the official test rows of every model table.

    ``text_ok`` / ``image_ok`` are Series indexed by row_id. Every X_test row must have a
    probability row in every fused model's table, else one line names the model and the row.
    Returns the submission frame and a row-accounting report.
    """
    official = catalog[catalog["is_official_test"].astype(bool)].sort_values("row_id")
    ids = official["row_id"].to_numpy(dtype=np.int64)
    mats = []
    for name in model.models:
        t = tables[name]
        t = t[t["split"].astype(str) == "official_test"].set_index("row_id")
        missing = np.setdiff1d(ids, t.index.to_numpy())
        if len(missing):
            orig = official.loc[official["row_id"] == missing[0], "orig_index"].iloc[0]
            raise PipelineError(f"reports/probs/{name}.parquet: no official_test row for row_id {missing[0]} "
                                f"(X_test index {orig}); expected one per X_test row (rerun `dvc repro {name}`)")
        mats.append(t.loc[ids, list(fusion.PROBA_COLUMNS)].to_numpy(dtype=np.float64))
    t_ok = np.ones(len(ids), bool) if text_ok is None else text_ok.reindex(ids).fillna(True).to_numpy(bool)
    i_ok = np.ones(len(ids), bool) if image_ok is None else image_ok.reindex(ids).fillna(True).to_numpy(bool)
    proba = model.predict_proba(mats, fusion.availability(model.modalities, t_ok, i_ok))
    submission = submission_frame(official, proba)
    inputs = pd.Series(model.inputs_used(t_ok, i_ok)).value_counts()
    report = {"rows_official_test": int(len(official)), "rows_submitted": int(len(submission)),
              "strategy": model.strategy, "models": model.models,
              "inputs_used": {str(k): int(v) for k, v in inputs.items()},
              "predicted_class_counts": {str(k): int(v) for k, v in
                                         submission["prdtypecode"].value_counts().sort_index().items()}}
    return submission, report

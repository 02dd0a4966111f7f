"""The ``fusion`` stage's work: the models' probability tables in, the fused model and its reports out.

Late fusion of the models' class probabilities (the study's section VI). The pieces, one module each:
the strategies (:mod:`~rakuten.fusion.strategies`, :mod:`~rakuten.fusion.weights`,
:mod:`~rakuten.fusion.meta`), the fitting and out-of-fold choice on validation rows
(:mod:`~rakuten.fusion.selection`), the calibration of the chosen fusion and its human-review threshold
(:mod:`~rakuten.fusion.calibration`, :mod:`~rakuten.fusion.review`), the fused model with its missing-input
fallback (:mod:`~rakuten.fusion.model`), its files (:mod:`~rakuten.fusion.persistence`) and its params
(:mod:`~rakuten.fusion.config`). Here: aligning the tables and reporting every strategy on test.

No leakage, by construction: only validation rows reach :func:`rakuten.fusion.selection.fit_fusion`,
:func:`rakuten.fusion.calibration.choose` and :func:`rakuten.fusion.review.choose_threshold`; test rows
only ever pass through ``predict_proba`` to be reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from rakuten.contracts.classes import PROBA_COLUMNS, codes_to_indices, indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.core.errors import PipelineError
from rakuten.fusion import calibration, selection
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.model import FusedModel, availability
from rakuten.fusion.probs import normalise_rows
from rakuten.fusion.review import ReviewConfig, ReviewThreshold, choose_threshold
from rakuten.fusion.strategies import STRATEGIES

log = logging.getLogger(__name__)


def align_tables(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Rows common to every model table (same row ids, splits and labels) and one matrix per model.

    The tables come from one split, so any difference is a stale stage: one line names it.
    """
    names = list(tables)
    ref_name = names[0]
    ref = tables[ref_name].sort_values("row_id").reset_index(drop=True)
    rows = ref[["row_id", "split", "prdtypecode"]]
    mats = []
    for name in names:
        t = tables[name].sort_values("row_id").reset_index(drop=True)
        if len(t) != len(ref) or not np.array_equal(t["row_id"].to_numpy(), ref["row_id"].to_numpy()):
            missing = np.setdiff1d(ref["row_id"].to_numpy(), t["row_id"].to_numpy())
            extra = np.setdiff1d(t["row_id"].to_numpy(), ref["row_id"].to_numpy())
            what = (
                f"row_id {missing[0]} missing (present in {ref_name})"
                if len(missing)
                else f"row_id {extra[0] if len(extra) else '?'} not in {ref_name}"
            )
            raise PipelineError(
                f"reports/probs/{name}.parquet: {what}; expected the same rows in every model table "
                f"(rerun `dvc repro {name}`)"
            )
        if not np.array_equal(t["split"].astype(str).to_numpy(), ref["split"].astype(str).to_numpy()):
            raise PipelineError(
                f"reports/probs/{name}.parquet: split column differs from {ref_name}; rerun `dvc repro {name}`"
            )
        mats.append(t[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64))
    return rows, mats


@dataclass
class FusionResult:
    model: FusedModel
    comparison: pd.DataFrame  # one row per strategy: val CV and test scores, chosen flag
    table: pd.DataFrame  # the chosen fusion, calibrated, in the probability-table contract
    predictions: pd.DataFrame  # row_id, split, prdtypecode, strategy, predicted (val out-of-fold + test)
    uncalibrated: pd.DataFrame  # the chosen fusion before calibration, same contract (val: out-of-fold)
    calibration: dict  # the calibration block of reports/fusion.json (candidates, chosen, params)
    review: dict  # the review block of reports/fusion.json (target, threshold, val coverage / precision)


def _predictions(
    rows: pd.DataFrame, mask: np.ndarray, split: str, strategy: str, predicted: np.ndarray
) -> pd.DataFrame:
    """The ``predictions`` rows of one strategy on one split."""
    return pd.DataFrame(
        {
            "row_id": rows.loc[mask, "row_id"].to_numpy(),
            "split": split,
            "prdtypecode": rows.loc[mask, "prdtypecode"].to_numpy(),
            "strategy": strategy,
            "predicted": predicted,
        }
    )


def _report_strategies(
    fitted: selection.FittedFusion, chosen: str, rows: pd.DataFrame, mats: list[np.ndarray], val: np.ndarray
) -> tuple[list[dict], list[pd.DataFrame]]:
    """Per strategy: its comparison record (val CV scores, test scores) and its val (out-of-fold) and
    test predictions. Test labels are read here only, to score what was fitted without them."""
    split = rows["split"].astype(str).to_numpy()
    test = split == "test"
    y_test = rows.loc[test, "prdtypecode"].to_numpy(dtype=np.int64) if test.any() else None
    records, preds = [], []
    for name in STRATEGIES:
        rec = {
            "strategy": name,
            "chosen": name == chosen,
            **{f"val_cv_{k}": v for k, v in fitted.val_scores[name].items()},
        }
        val_pred = indices_to_codes(fitted.oof[name].argmax(axis=1))
        preds.append(_predictions(rows, val, "val", name, val_pred))
        if test.any():
            test_pred = indices_to_codes(fitted.strategies[name].predict_proba([m[test] for m in mats]).argmax(1))
            rec.update({f"test_{k}": v for k, v in scores(y_test, test_pred).items()})
            preds.append(_predictions(rows, test, "test", name, test_pred))
        records.append(rec)
    return records, preds


def _availability(
    rows: pd.DataFrame, modalities: Sequence[str], text_ok: pd.Series | None, image_ok: pd.Series | None
) -> np.ndarray | None:
    """(n, m) availability of each model's input per row, or None when neither flag is given."""
    if text_ok is None and image_ok is None:
        return None
    ids = rows["row_id"]
    t_ok = np.ones(len(rows), bool) if text_ok is None else text_ok.reindex(ids).fillna(True).to_numpy(bool)
    i_ok = np.ones(len(rows), bool) if image_ok is None else image_ok.reindex(ids).fillna(True).to_numpy(bool)
    avail = availability(modalities, t_ok, i_ok)
    log.info("fusion: %d rows fused from a subset of models (missing text or image)", int((~avail.all(axis=1)).sum()))
    return avail


def fuse_tables(
    tables: dict[str, pd.DataFrame],
    modalities: Sequence[str],
    cfg: FusionConfig,
    groups: pd.Series | None = None,
    text_ok: pd.Series | None = None,
    image_ok: pd.Series | None = None,
    review: ReviewConfig | None = None,
) -> FusionResult:
    """Fit on validation rows, choose on out-of-fold validation weighted F1, calibrate the chosen fusion and
    set its review threshold on validation, report on test.

    ``groups``/``text_ok``/``image_ok`` are Series indexed by row_id (optional). Validation rows
    in the output carry their out-of-fold probabilities (calibrated by a calibrator fitted on the other
    folds), so their scores stay honest.
    """
    from rakuten.contracts.model_files import proba_frame

    rows, mats = align_tables(tables)
    val = rows["split"].astype(str).to_numpy() == "val"
    if not val.any():
        raise PipelineError("reports/probs: no validation rows; fusion is fitted on split == val")
    y_val = codes_to_indices(rows.loc[val, "prdtypecode"].to_numpy(dtype=np.int64))
    g_val = None if groups is None else groups.reindex(rows.loc[val, "row_id"]).to_numpy()
    if g_val is not None and pd.isna(g_val).any():
        g_val = None
        log.warning("group ids missing for some validation rows; CV folds ignore duplicate groups")
    fitted = selection.fit_fusion([m[val] for m in mats], y_val, cfg, g_val)  # validation rows only
    chosen = selection.choose_strategy(fitted.val_scores, cfg.strategy)
    fallback = fitted.strategies["soft_vote_fit"].weights_
    model = FusedModel(chosen, list(cfg.models), list(modalities), fitted.strategies[chosen], fallback)
    records, preds = _report_strategies(fitted, chosen, rows, mats, val)

    avail = _availability(rows, modalities, text_ok, image_ok)
    raw = model.raw_proba(mats, avail)
    raw[val] = (
        fitted.oof[chosen]
        if avail is None
        else _oof_with_fallback(model, fitted.oof[chosen], [m[val] for m in mats], avail[val])
    )
    raw = normalise_rows(raw)
    fused, calib, threshold = _calibrate(model, raw, val, y_val, g_val, cfg, review or ReviewConfig())
    predictions = pd.concat(preds, ignore_index=True)
    predictions["prdtypecode"] = pd.array(predictions["prdtypecode"], dtype="Int64")
    return FusionResult(
        model,
        pd.DataFrame.from_records(records),
        proba_frame(rows, fused),
        predictions,
        proba_frame(rows, raw),
        calib.report(),
        threshold.report(),
    )


def _calibrate(
    model: FusedModel,
    raw: np.ndarray,
    val: np.ndarray,
    y_val: np.ndarray,
    g_val: np.ndarray | None,
    cfg: FusionConfig,
    review: ReviewConfig,
) -> tuple[np.ndarray, calibration.Calibration, ReviewThreshold]:
    """Calibrate the fused probabilities ``raw`` and set the review threshold, both on validation rows only.

    The calibrator is cross-fitted on the folds the strategies were scored on (duplicate groups in one
    fold): validation rows get their out-of-fold calibrated probabilities, the threshold is chosen on
    those, and the calibrator refitted on every validation row is stored in ``model`` for the other rows.
    """
    splits = selection.cv_splits(y_val, g_val, cfg.cv_folds, cfg.seed)
    calib = calibration.choose(raw[val], y_val, splits, cfg.calibration)  # validation rows only
    model.calibrator = calib.calibrator
    threshold = choose_threshold(calib.oof, y_val, review.target_precision)
    model.review_threshold = threshold.threshold
    fused = model.calibrator.transform(raw)
    fused[val] = calib.oof
    return normalise_rows(fused), calib, threshold


def _oof_with_fallback(model: FusedModel, oof: np.ndarray, mats: list[np.ndarray], avail: np.ndarray) -> np.ndarray:
    """Out-of-fold combiner output, with the missing-input fallback applied to the rows that need it."""
    out = oof.copy()
    partial = ~avail.all(axis=1)
    if partial.any():
        out[partial] = model.raw_proba([m[partial] for m in mats], avail[partial])
    return out

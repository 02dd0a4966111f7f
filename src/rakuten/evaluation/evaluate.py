"""The evaluate stage: every model and fusion strategy scored on test, per-class and confusion tables,
the metrics summary and the results table. The scores themselves live in :mod:`rakuten.contracts.metrics`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from rakuten.contracts import registry
from rakuten.contracts.classes import CLASS_CODES
from rakuten.contracts.metrics import per_class_report, scores
from rakuten.core.config import knob
from rakuten.evaluation.bootstrap import BootstrapConfig, Estimate, PairedDifference
from rakuten.evaluation.uncertainty import interval_of


@dataclass(frozen=True)
class EvaluateConfig(BootstrapConfig):
    """``evaluate``: the bootstrap intervals of every reported score and the calibration bins."""

    calibration_bins: int = knob(
        15, "equal-width confidence bins of the expected calibration error and the reliability diagrams", lo=2, hi=100
    )


def confusion_table(y_true, y_pred) -> pd.DataFrame:
    """Confusion matrix in canonical order as a square DataFrame (rows actual, columns predicted)."""
    m = confusion_matrix(y_true, y_pred, labels=list(CLASS_CODES))
    return pd.DataFrame(m, index=pd.Index(CLASS_CODES, name="actual"), columns=pd.Index(CLASS_CODES, name="predicted"))


def confusion_pairs(y_true, y_pred) -> pd.DataFrame:
    """One ``actual,predicted`` row per prediction: the input of DVC's ``confusion`` plot template."""
    return pd.DataFrame({"actual": np.asarray(y_true, dtype=np.int64), "predicted": np.asarray(y_pred, dtype=np.int64)})


#: the study's weighted F1 per fusion strategy (docs/data.md, "Reference results"); each model's own figure
#: is in the registry (ModelSpec.study_f1 / study_setting), so a new model brings its own
STUDY_WEIGHTED_F1: dict[str, tuple[float, str]] = {
    "fusion_max_rule": (0.8899, "CamemBERT + ResNet50"),
    "fusion_soft_vote": (0.8899, "0.6 text / 0.4 image"),
    "fusion_stacking_xgboost": (0.9002, "best of the study"),
}
#: why a fusion strategy has no study figure
STUDY_NOTES: dict[str, str] = {
    "fusion_stacking_logreg": "tested, below XGBoost (no figure given)",
    "fusion_stacking_linear_svm": "tested, below XGBoost (no figure given)",
    "fusion_voting_stacking": "below plain stacking (no figure given)",
    "fusion_soft_vote_fit": "not in the study (weights searched on val)",
}


def study_reference(name: str) -> tuple[float | None, str]:
    """The study's weighted F1 of ``name`` (a registered model, or ``fusion_<strategy>``) and its setting,
    or None and why there is no figure (an empty note for a name the study does not know)."""
    model = registry.MODELS.get(name)
    if model is not None:
        return model.study_f1, model.study_setting
    return STUDY_WEIGHTED_F1.get(name, (None, STUDY_NOTES.get(name, "")))


def _fmt(value) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def _cell(value, intervals: pd.DataFrame | None, name: str, split: str, score: str) -> str:
    """A score, followed by its bootstrap interval when one was computed: ``0.8674 [0.8370, 0.8970]``."""
    iv = None if intervals is None else interval_of(intervals, name, split, score)
    return _fmt(value) if iv is None else f"{_fmt(value)} [{_fmt(iv[0])}, {_fmt(iv[1])}]"


#: the scores of each row of the results table, in column order
RESULT_COLUMNS = (("val", "weighted_f1"), ("test", "weighted_f1"), ("test", "macro_f1"), ("test", "accuracy"))


def _row_line(r, chosen: str, intervals: pd.DataFrame | None) -> str:
    """One row of the results table (the chosen strategy in bold)."""
    study, note = study_reference(r.name)
    name = f"**{r.name}**" if r.name == f"fusion_{chosen}" else r.name
    cells = [_cell(getattr(r, f"{split}_{score}"), intervals, r.name, split, score) for split, score in RESULT_COLUMNS]
    return f"| {name} | {r.kind} | {' | '.join(cells)} | {_fmt(study)} | {note} |"


def _gain_lines(table: pd.DataFrame, chosen: str, paired_gain: tuple[str, PairedDifference] | None) -> list[str]:
    """The chosen fusion against the best single model: the plain difference, then the paired bootstrap's."""
    lines = []
    models = table[table["kind"] == "model"]
    fusions = table[table["kind"] == "fusion"]
    if len(models) and len(fusions):
        best_model = models.loc[models["test_weighted_f1"].idxmax()]
        chosen_row = fusions[fusions["name"] == f"fusion_{chosen}"].iloc[0]
        gain = chosen_row["test_weighted_f1"] - best_model["test_weighted_f1"]
        lines += [
            "",
            f"Chosen fusion vs best single model ({best_model['name']}): "
            f"{chosen_row['test_weighted_f1']:.4f} vs {best_model['test_weighted_f1']:.4f} "
            f"({gain:+.4f} test weighted F1).",
        ]
    if paired_gain is not None:
        best, d = paired_gain
        lines.append(
            f"Paired bootstrap, fused model (`fusion`) minus {best} on the same resampled test rows: "
            f"{d.value:+.4f} [{d.low:+.4f}, {d.high:+.4f}]; the fusion wins in {d.share_a_wins:.1%} of the resamples."
        )
    return lines


def results_markdown(
    table: pd.DataFrame,
    data_source: str,
    n_rows: dict[str, int],
    chosen: str,
    intervals: pd.DataFrame | None = None,
    paired_gain: tuple[str, PairedDifference] | None = None,
    level: float = 0.95,
) -> str:
    """The results table: every model and fusion strategy on test, beside the study's figure.

    ``table`` has columns ``name``, ``kind`` (model/fusion), ``val_weighted_f1``,
    ``test_weighted_f1``, ``test_macro_f1``, ``test_accuracy``. With ``intervals``
    (:func:`rakuten.evaluation.uncertainty.score_intervals`) each score carries its bootstrap interval; with
    ``paired_gain`` (:func:`rakuten.evaluation.uncertainty.fusion_gain`) the fusion's gain carries its paired one.
    """
    data = (
        "the **synthetic sample catalog** (data.source = sample): figures check the pipeline, they are "
        "not comparable with the study's"
        if data_source == "sample"
        else "the **real challenge files** (data.source = raw)"
    )
    lines = [
        "# Results on the held-out test split",
        "",
        f"Data: {data}. Rows: " + ", ".join(f"{k} {v}" for k, v in n_rows.items()) + ".",
        "",
        f"Chosen fusion (best out-of-fold validation weighted F1): **{chosen}**. "
        "Fusion validation scores are cross-validated on validation rows (the meta-learners are fitted there); "
        "model validation scores are plain.",
        "",
        "| model / strategy | kind | val weighted F1 | test weighted F1 | test macro F1 | test accuracy "
        "| study weighted F1 | study setting |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if intervals is not None:
        lines[-2:-2] = [f"Brackets: {level:.0%} bootstrap interval (test rows resampled; docs/uncertainty.md).", ""]
    lines += [_row_line(r, chosen, intervals) for r in table.itertuples(index=False)]
    lines += _gain_lines(table, chosen, paired_gain)
    return "\n".join(lines) + "\n"


def _argmax_codes(table: pd.DataFrame) -> np.ndarray:
    from rakuten.contracts.classes import PROBA_COLUMNS, indices_to_codes

    return indices_to_codes(table[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1))


def labelled_predictions(
    model_tables: dict[str, pd.DataFrame], fusion_table: pd.DataFrame, strategy_predictions: pd.DataFrame
) -> pd.DataFrame:
    """Long table ``name, kind, row_id, split, actual, predicted`` for every model, the chosen fusion
    (``fusion``) and every strategy (``fusion_<strategy>``), on the labelled splits only."""
    parts = []
    for name, kind, table in [*((n, "model", t) for n, t in model_tables.items()), ("fusion", "fusion", fusion_table)]:
        labelled = table[table["split"].isin(["val", "test"])]
        parts.append(
            pd.DataFrame(
                {
                    "name": name,
                    "kind": kind,
                    "row_id": labelled["row_id"].to_numpy(dtype=np.int64),
                    "split": labelled["split"].astype(str).to_numpy(),
                    "actual": labelled["prdtypecode"].to_numpy(dtype=np.int64),
                    "predicted": _argmax_codes(labelled),
                }
            )
        )
    for strategy, part in strategy_predictions.groupby("strategy", sort=False):
        parts.append(
            pd.DataFrame(
                {
                    "name": f"fusion_{strategy}",
                    "kind": "fusion",
                    "row_id": part["row_id"].to_numpy(dtype=np.int64),
                    "split": part["split"].astype(str).to_numpy(),
                    "actual": part["prdtypecode"].to_numpy(dtype=np.int64),
                    "predicted": part["predicted"].to_numpy(dtype=np.int64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def evaluate_predictions(preds: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Score every name of :func:`labelled_predictions`: a summary table (val and test scores),
    per-class reports on test and confusion pairs on test, keyed by name."""
    rows, per_class, confusion = [], {}, {}
    for name, part in preds.groupby("name", sort=False):
        test = part[part["split"] == "test"]
        val = part[part["split"] == "val"]
        if len(test) == 0:
            raise ValueError(f"{name}: no test rows to evaluate")
        s_test = scores(test["actual"], test["predicted"])
        s_val = scores(val["actual"], val["predicted"]) if len(val) else {}
        rows.append(
            {
                "name": name,
                "kind": part["kind"].iloc[0],
                "val_weighted_f1": s_val.get("weighted_f1"),
                **{f"test_{k}": v for k, v in s_test.items()},
            }
        )
        per_class[name] = per_class_report(test["actual"], test["predicted"])
        confusion[name] = confusion_pairs(test["actual"], test["predicted"])
    return pd.DataFrame.from_records(rows), per_class, confusion


def summary_metrics(table: pd.DataFrame, intervals: pd.DataFrame | None = None) -> dict:
    """``reports/metrics.json``: test scores of every model and fusion, val scores, and the fusion's gain
    over the best single model (what ``dvc metrics diff`` / ``dvc exp show`` compare). With ``intervals``
    every score gets ``<score>_low`` / ``<score>_high`` beside it (and every score of every name)."""
    test, val = {}, {}
    for r in table.itertuples(index=False):
        full = r.kind == "model" or r.name == "fusion"
        test[r.name] = (
            {"weighted_f1": r.test_weighted_f1, "macro_f1": r.test_macro_f1, "accuracy": r.test_accuracy}
            if full
            else {"weighted_f1": r.test_weighted_f1}
        )
        val[r.name] = {"weighted_f1": r.val_weighted_f1}
    out = {"test": test, "val": val}
    if intervals is not None:
        for r in intervals.itertuples(index=False):
            out[r.split].setdefault(r.name, {}).update(Estimate(r.value, r.low, r.high).as_dict(r.score))
    models = table[table["kind"] == "model"]
    if len(models) and (table["name"] == "fusion").any():
        fused = float(table.loc[table["name"] == "fusion", "test_weighted_f1"].iloc[0])
        out["fusion_gain_over_best_model"] = round(fused - float(models["test_weighted_f1"].max()), 6)
    return out


def _estimates(block: dict[str, Estimate | None]) -> dict[str, float]:
    """``{score: value, score_low: low, score_high: high}`` for every estimate of ``block`` (None left out)."""
    out: dict[str, float] = {}
    for key, est in block.items():
        if est is not None:
            out.update(est.as_dict(key))
    return out


def metrics_document(
    summary: dict,
    cfg: EvaluateConfig,
    paired_gain: tuple[str, PairedDifference],
    calibration: dict[str, dict[str, Estimate]],
    review: dict | None,
) -> dict:
    """``reports/metrics.json``: :func:`summary_metrics` plus the bootstrap settings, the paired fusion gain,
    calibration of every model and the fused output (before and after calibration) and the review threshold
    on test. Every score carries ``_low`` / ``_high``; all leaves are numbers (``dvc metrics diff``)."""
    best, gain = paired_gain
    doc = {
        **summary,
        "bootstrap": {"resamples": cfg.resamples, "level": cfg.level, "seed": cfg.seed},
        "fusion_gain": gain.as_dict(),
        "calibration": {name: _estimates(block) for name, block in calibration.items()},
    }
    doc["fusion_gain_over_best_model"] = round(gain.value, 6)
    if review is not None:
        doc["review"] = {
            "target_precision": review["target_precision"],
            "threshold": review["threshold"],
            **_estimates({"coverage": review["coverage"], "precision": review["precision"]}),
        }
    return doc


@dataclass(frozen=True)
class TrustFigures:
    """What the evaluate stage adds to the scores: their intervals, the paired fusion gain, calibration,
    the reliability bins of the fused output before and after calibration, the review threshold on test."""

    intervals: pd.DataFrame
    paired_gain: tuple[str, PairedDifference]
    calibration: dict[str, dict[str, Estimate]]
    reliability: dict[str, pd.DataFrame]
    review: dict | None
    risk_curve: pd.DataFrame | None


def trust_figures(
    preds: pd.DataFrame,
    table: pd.DataFrame,
    probs: dict[str, pd.DataFrame],
    review_block: dict | None,
    cfg: EvaluateConfig,
) -> TrustFigures:
    """Every figure with its interval. ``probs``: the probability tables to check for calibration, by name
    (the models, ``fusion`` and ``fusion_uncalibrated``); ``review_block``: reports/fusion.json's ``review``."""
    from rakuten.evaluation import reliability as R
    from rakuten.evaluation.uncertainty import fusion_gain, score_intervals

    calibration = {name: R.calibration_with_intervals(t, cfg.calibration_bins, cfg) for name, t in probs.items()}
    reliability = {
        name: R.reliability_table(probs[name], cfg.calibration_bins)
        for name in ("fusion_uncalibrated", "fusion")
        if name in probs
    }
    review = curve = None
    if review_block is not None and "fusion" in probs:
        review = {
            "target_precision": review_block["target_precision"],
            "threshold": review_block["threshold"],
            **R.review_on_test(probs["fusion"], float(review_block["threshold"]), cfg),
        }
        curve = R.risk_coverage_points(probs["fusion"])
    return TrustFigures(
        score_intervals(preds, cfg), fusion_gain(preds, table, cfg), calibration, reliability, review, curve
    )

"""The evaluate stage: every model and fusion strategy scored on test, per-class and confusion tables,
the metrics summary and the results table. The scores themselves live in :mod:`rakuten.contracts.metrics`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from rakuten.contracts import registry
from rakuten.contracts.classes import CLASS_CODES
from rakuten.contracts.metrics import per_class_report, scores


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


def results_markdown(table: pd.DataFrame, data_source: str, n_rows: dict[str, int], chosen: str) -> str:
    """The results table: every model and fusion strategy on test, beside the study's figure.

    ``table`` has columns ``name``, ``kind`` (model/fusion), ``val_weighted_f1``,
    ``test_weighted_f1``, ``test_macro_f1``, ``test_accuracy``.
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
    for r in table.itertuples(index=False):
        study, note = study_reference(r.name)
        name = f"**{r.name}**" if r.name == f"fusion_{chosen}" else r.name
        lines.append(
            f"| {name} | {r.kind} | {_fmt(r.val_weighted_f1)} | {_fmt(r.test_weighted_f1)} | "
            f"{_fmt(r.test_macro_f1)} | {_fmt(r.test_accuracy)} | {_fmt(study)} | {note} |"
        )
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
    return "\n".join(lines) + "\n"


def _argmax_codes(table: pd.DataFrame) -> np.ndarray:
    from rakuten.contracts.classes import PROBA_COLUMNS, indices_to_codes

    return indices_to_codes(table[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1))


def labelled_predictions(
    model_tables: dict[str, pd.DataFrame], fusion_table: pd.DataFrame, strategy_predictions: pd.DataFrame
) -> pd.DataFrame:
    """Long table ``name, kind, split, actual, predicted`` for every model, the chosen fusion
    (``fusion``) and every strategy (``fusion_<strategy>``), on the labelled splits only."""
    parts = []
    for name, kind, table in [*((n, "model", t) for n, t in model_tables.items()), ("fusion", "fusion", fusion_table)]:
        labelled = table[table["split"].isin(["val", "test"])]
        parts.append(
            pd.DataFrame(
                {
                    "name": name,
                    "kind": kind,
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


def summary_metrics(table: pd.DataFrame) -> dict:
    """``reports/metrics.json``: test scores of every model and fusion, val scores, and the fusion's gain
    over the best single model (what ``dvc metrics diff`` / ``dvc exp show`` compare)."""
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
    models = table[table["kind"] == "model"]
    if len(models) and (table["name"] == "fusion").any():
        fused = float(table.loc[table["name"] == "fusion", "test_weighted_f1"].iloc[0])
        out["fusion_gain_over_best_model"] = round(fused - float(models["test_weighted_f1"].max()), 6)
    return out

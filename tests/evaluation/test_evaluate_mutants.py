"""Exact values of the evaluate stage's tables, on hand-made cases (docs/mutation.md).

Every expected number below is computed by hand in the comments, independently of scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, PROBA_COLUMNS
from rakuten.contracts.metrics import scores
from rakuten.contracts.model_files import proba_frame, split_scores
from rakuten.evaluation import evaluate as E

# Unequal class sizes, so that weighted F1, macro F1 and accuracy all differ:
#   actual    10 x5, 40 x2, 50 x1
#   predicted 10 10 10 10 40 | 40 10 | 40
#   class 10: tp 4, fp 1, fn 1 -> F1 = 2*4 / (2*4 + 1 + 1) = 0.8
#   class 40: tp 1, fp 2, fn 1 -> F1 = 2*1 / (2*1 + 2 + 1) = 0.4
#   class 50: tp 0            -> F1 = 0
#   weighted = (5*0.8 + 2*0.4 + 1*0) / 8 = 0.6;  macro = (0.8 + 0.4 + 0) / 3 = 0.4;  accuracy = 5/8
ACTUAL = [10, 10, 10, 10, 10, 40, 40, 50]
PREDICTED = [10, 10, 10, 10, 40, 40, 10, 40]
WEIGHTED, MACRO, ACCURACY = 0.6, 0.4, 0.625


def test_challenge_metric_is_weighted_not_macro_f1_on_unequal_classes():
    result = scores(ACTUAL, PREDICTED)
    assert result == {"weighted_f1": WEIGHTED, "macro_f1": MACRO, "accuracy": ACCURACY}


def _preds(rows: list[tuple[str, str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["name", "kind", "split", "actual", "predicted"])


def test_evaluate_predictions_scores_each_name_with_weighted_f1():
    test_rows = [("m", "model", "test", a, p) for a, p in zip(ACTUAL, PREDICTED)]
    # val: 10, 10, 40 predicted 10, 40, 40 -> class 10 F1 2/3, class 40 F1 2/3 -> weighted 2/3
    val_rows = [("m", "model", "val", 10, 10), ("m", "model", "val", 10, 40), ("m", "model", "val", 40, 40)]
    fusion_rows = [("fusion_x", "fusion", "test", 10, 10), ("fusion_x", "fusion", "test", 40, 10)]
    single = [("a_single", "model", "test", 40, 40)]  # one row is enough to be scored
    table, per_class, confusion = E.evaluate_predictions(_preds(test_rows + val_rows + fusion_rows + single))
    assert table.columns.tolist() == [
        "name",
        "kind",
        "val_weighted_f1",
        "test_weighted_f1",
        "test_macro_f1",
        "test_accuracy",
    ]
    assert table["name"].tolist() == ["m", "fusion_x", "a_single"]  # first-seen order, not sorted
    assert table["kind"].tolist() == ["model", "fusion", "model"]
    assert table.iloc[2]["test_accuracy"] == 1.0
    m, f = table.iloc[0], table.iloc[1]
    assert (m["test_weighted_f1"], m["test_macro_f1"], m["test_accuracy"]) == (WEIGHTED, MACRO, ACCURACY)
    assert m["val_weighted_f1"] == round(2 / 3, 6)
    # fusion_x: 10->10, 40->10: class 10 F1 = 2/3, class 40 F1 = 0 -> weighted (2/3 + 0)/2, accuracy 1/2
    assert math.isnan(f["val_weighted_f1"])  # no val rows: no val score (None -> NaN)
    assert f["test_weighted_f1"] == round(1 / 3, 6) and f["test_accuracy"] == 0.5
    report = per_class["m"].set_index("prdtypecode")
    assert report.loc[10, ["precision", "recall", "f1", "support"]].tolist() == [0.8, 0.8, 0.8, 5]
    assert report.loc[40, ["precision", "recall", "f1", "support"]].tolist() == [round(1 / 3, 6), 0.5, 0.4, 2]
    assert report.loc[50, ["f1", "support"]].tolist() == [0.0, 1]
    assert confusion["m"]["actual"].tolist() == ACTUAL and confusion["m"]["predicted"].tolist() == PREDICTED
    assert confusion["fusion_x"].values.tolist() == [[10, 10], [40, 10]]


def test_a_name_without_test_rows_is_an_error_naming_it():
    preds = _preds([("camembert", "model", "val", 10, 10)])
    with pytest.raises(ValueError, match=r"^camembert: no test rows to evaluate$"):
        E.evaluate_predictions(preds)


def test_confusion_table_counts_in_canonical_order():
    table = E.confusion_table([10, 10, 40, 2905, 2905], [10, 40, 40, 10, 2905])
    assert table.shape == (N_CLASSES, N_CLASSES)
    assert table.index.name == "actual" and table.columns.name == "predicted"
    assert table.index.tolist() == list(CLASS_CODES) == table.columns.tolist()
    assert table.loc[10, 10] == 1 and table.loc[10, 40] == 1 and table.loc[40, 40] == 1
    assert table.loc[2905, 10] == 1 and table.loc[2905, 2905] == 1
    assert int(table.to_numpy().sum()) == 5


def test_confusion_pairs_are_int64_columns():
    pairs = E.confusion_pairs(np.array([10.0, 40.0]), np.array([2905.0, 10.0]))
    assert pairs.columns.tolist() == ["actual", "predicted"]
    assert pairs.dtypes.tolist() == [np.int64, np.int64]
    assert pairs.values.tolist() == [[10, 2905], [40, 10]]


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "—"),
        (float("nan"), "—"),
        (np.float64("nan"), "—"),
        (0.5, "0.5000"),
        (0.123456, "0.1235"),
        (1, "1.0000"),
        (0.0, "0.0000"),
    ],
)
def test_fmt(value, text):
    assert E._fmt(value) == text


def _summary_table() -> pd.DataFrame:
    return pd.DataFrame(
        [
            # name, kind, val, test weighted, test macro, test accuracy
            ("tfidf_svm", "model", 0.5, 0.6, 0.55, 0.65),
            ("resnet50", "model", float("nan"), 0.4, 0.3, 0.45),
            ("fusion", "fusion", 0.75, 0.7, 0.68, 0.72),
            ("fusion_soft_vote", "fusion", 0.75, 0.7, 0.68, 0.72),
            ("fusion_stacking_logreg", "fusion", None, 0.123456, 0.1, 0.2),
        ],
        columns=["name", "kind", "val_weighted_f1", "test_weighted_f1", "test_macro_f1", "test_accuracy"],
    )


HEADER = (
    "| model / strategy | kind | val weighted F1 | test weighted F1 | test macro F1 | test accuracy "
    "| study weighted F1 | study setting |"
)
CHOSEN = (
    "Chosen fusion (best out-of-fold validation weighted F1): **soft_vote**. Fusion validation scores are "
    "cross-validated on validation rows (the meta-learners are fitted there); model validation scores are "
    "plain."
)


def test_results_markdown_exact_text():
    md = E.results_markdown(_summary_table(), "sample", {"val": 2, "test": 3}, "soft_vote")
    expected = (
        "\n".join(
            [
                "# Results on the held-out test split",
                "",
                "Data: the **synthetic sample catalog** (data.source = sample): figures check the pipeline, they are not "  # noqa: E501
                "comparable with the study's. Rows: val 2, test 3.",
                "",
                CHOSEN,
                "",
                HEADER,
                "|---|---|---|---|---|---|---|---|",
                "| tfidf_svm | model | 0.5000 | 0.6000 | 0.5500 | 0.6500 | 0.8172 | TF-IDF 10k + LinearSVC C=1 balanced |",  # noqa: E501
                "| resnet50 | model | — | 0.4000 | 0.3000 | 0.4500 | 0.5978 | ResNet50 ImageNet, fine-tuned on cleaned images |",  # noqa: E501
                "| fusion | fusion | 0.7500 | 0.7000 | 0.6800 | 0.7200 | — |  |",
                "| **fusion_soft_vote** | fusion | 0.7500 | 0.7000 | 0.6800 | 0.7200 | 0.8899 | 0.6 text / 0.4 image |",
                "| fusion_stacking_logreg | fusion | — | 0.1235 | 0.1000 | 0.2000 | — | tested, below XGBoost (no figure "  # noqa: E501
                "given) |",
                "",
                # best model by test weighted F1: tfidf_svm 0.6; gain 0.7 - 0.6
                "Chosen fusion vs best single model (tfidf_svm): 0.7000 vs 0.6000 (+0.1000 test weighted F1).",
            ]
        )
        + "\n"
    )
    assert md == expected


def test_results_markdown_raw_data_negative_gain_and_missing_parts():
    table = _summary_table()
    table.loc[table["name"] == "fusion_soft_vote", "test_weighted_f1"] = 0.55
    md = E.results_markdown(table, "raw", {"test": 3}, "soft_vote")
    assert "Data: the **real challenge files** (data.source = raw). Rows: test 3.\n" in md
    assert md.endswith("Chosen fusion vs best single model (tfidf_svm): 0.5500 vs 0.6000 (-0.0500 test weighted F1).\n")
    models_only = E.results_markdown(table[table["kind"] == "model"], "raw", {}, "soft_vote")
    fusions_only = E.results_markdown(table[table["kind"] == "fusion"], "raw", {}, "soft_vote")
    for md in (models_only, fusions_only):
        assert "vs best single model" not in md
        assert md.endswith(" |\n")


def test_summary_metrics_exact():
    summary = E.summary_metrics(_summary_table())
    for name in ("resnet50", "fusion_stacking_logreg"):  # NaN != NaN: checked, then replaced for the comparison
        assert math.isnan(summary["val"][name]["weighted_f1"])
        summary["val"][name]["weighted_f1"] = "nan"
    assert summary == {
        "test": {
            "tfidf_svm": {"weighted_f1": 0.6, "macro_f1": 0.55, "accuracy": 0.65},
            "resnet50": {"weighted_f1": 0.4, "macro_f1": 0.3, "accuracy": 0.45},
            "fusion": {"weighted_f1": 0.7, "macro_f1": 0.68, "accuracy": 0.72},
            "fusion_soft_vote": {"weighted_f1": 0.7},
            "fusion_stacking_logreg": {"weighted_f1": 0.123456},
        },
        "val": {
            "tfidf_svm": {"weighted_f1": 0.5},
            "resnet50": {"weighted_f1": "nan"},
            "fusion": {"weighted_f1": 0.75},
            "fusion_soft_vote": {"weighted_f1": 0.75},
            "fusion_stacking_logreg": {"weighted_f1": "nan"},
        },
        "fusion_gain_over_best_model": 0.1,  # 0.7 - max(0.6, 0.4), rounded to 6 places
    }


def test_summary_metrics_gain_needs_models_and_the_fusion_row():
    table = _summary_table()
    assert "fusion_gain_over_best_model" not in E.summary_metrics(table[table["name"] != "fusion"])
    assert "fusion_gain_over_best_model" not in E.summary_metrics(table[table["kind"] == "fusion"])
    table.loc[table["name"] == "fusion", "test_weighted_f1"] = 0.123456789
    assert E.summary_metrics(table)["fusion_gain_over_best_model"] == round(0.123456789 - 0.6, 6)


def _contract(split: list[str], codes: list, argmax: list[int]) -> pd.DataFrame:
    proba = np.full((len(split), N_CLASSES), 0.5 / (N_CLASSES - 1))
    proba[np.arange(len(split)), [CLASS_CODES.index(c) for c in argmax]] = 0.5
    rows = pd.DataFrame({"row_id": np.arange(len(split)) * 2 + 1, "split": split, "prdtypecode": codes})
    return proba_frame(rows, proba)


def test_labelled_predictions_long_table():
    split = ["val", "official_test", "test", "test"]
    codes = [10, None, 40, 2905]
    models = {
        "tfidf_svm": _contract(split, codes, [10, 50, 40, 10]),
        "resnet50": _contract(split, codes, [40, 40, 40, 2905]),
    }
    fused = _contract(split, codes, [10, 10, 40, 2905])
    # strategies in their own order (not alphabetical); float columns, as after a round trip with missing values
    strategies = pd.DataFrame(
        {
            "row_id": [1, 5, 7, 1, 5, 7],
            "split": ["val", "test", "test"] * 2,
            "prdtypecode": [10.0, 40.0, 2905.0] * 2,
            "strategy": ["soft_vote"] * 3 + ["max_rule"] * 3,
            "predicted": [40.0, 40.0, 40.0, 10.0, 10.0, 10.0],
        }
    )
    out = E.labelled_predictions(models, fused, strategies)
    assert out.columns.tolist() == ["name", "kind", "row_id", "split", "actual", "predicted"]
    assert out["row_id"].tolist() == [1, 5, 7] * 5  # each name's rows keep their ids (the pairing of resamples)
    expected = [
        ["tfidf_svm", "model", "val", 10, 10],
        ["tfidf_svm", "model", "test", 40, 40],
        ["tfidf_svm", "model", "test", 2905, 10],
        ["resnet50", "model", "val", 10, 40],
        ["resnet50", "model", "test", 40, 40],
        ["resnet50", "model", "test", 2905, 2905],
        ["fusion", "fusion", "val", 10, 10],
        ["fusion", "fusion", "test", 40, 40],
        ["fusion", "fusion", "test", 2905, 2905],
        ["fusion_soft_vote", "fusion", "val", 10, 40],
        ["fusion_soft_vote", "fusion", "test", 40, 40],
        ["fusion_soft_vote", "fusion", "test", 2905, 40],
        ["fusion_max_rule", "fusion", "val", 10, 10],
        ["fusion_max_rule", "fusion", "test", 40, 10],
        ["fusion_max_rule", "fusion", "test", 2905, 10],
    ]
    assert out.drop(columns="row_id").values.tolist() == expected
    assert out.index.tolist() == list(range(len(expected)))
    assert out["actual"].dtype == np.int64 and out["predicted"].dtype == np.int64


def test_split_scores_use_weighted_f1_per_split():
    n = len(ACTUAL)
    split = ["test"] * n + ["val", "official_test"]
    table = _contract(split, ACTUAL + [40, None], PREDICTED + [40, 10])
    result = split_scores(table)
    assert result == {
        "val": {"weighted_f1": 1.0, "macro_f1": 1.0, "accuracy": 1.0},
        "test": {"weighted_f1": WEIGHTED, "macro_f1": MACRO, "accuracy": ACCURACY},
    }
    assert list(result) == ["val", "test"]
    assert split_scores(table[table["split"] == "test"]) == {"test": result["test"]}


def test_argmax_codes_reads_probability_columns_in_canonical_order():
    table = pd.DataFrame(np.eye(N_CLASSES)[[26, 0, 3]], columns=list(PROBA_COLUMNS))
    table.insert(0, "split", "test")
    assert E._argmax_codes(table).tolist() == [2905, 10, 60]

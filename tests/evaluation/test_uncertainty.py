"""The evaluate stage's intervals: scored on the right split, every name on the same rows, the fusion gain
paired against the best single model by test score; calibration and review figures with intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.calibration_metrics import calibration_scores
from rakuten.contracts.classes import CLASS_CODES, PROBA_COLUMNS, codes_to_indices
from rakuten.contracts.metrics import scores
from rakuten.core.errors import PipelineError
from rakuten.evaluation import bootstrap as B
from rakuten.evaluation import evaluate as E
from rakuten.evaluation import reliability as R
from rakuten.evaluation import uncertainty as U

CODES = np.array(CLASS_CODES)
CFG = E.EvaluateConfig(resamples=400, seed=0, calibration_bins=10)


def _preds(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Long table: val rows (ids 0..n-1) and test rows (ids n..2n-1); on test, `good` beats `bad`, and
    `fusion` beats both; on val, `bad` is the better one (a val/test mix-up shows)."""
    rng = np.random.default_rng(seed)
    parts = []
    for split, offset, rates in (
        ("val", 0, {"good": 0.6, "bad": 0.1, "fusion": 0.3}),
        ("test", n, {"good": 0.1, "bad": 0.5, "fusion": 0.05}),
    ):
        actual = CODES[rng.integers(0, 27, n)]
        for name, rate in rates.items():
            pred = actual.copy()
            wrong = rng.random(n) < rate
            pred[wrong] = CODES[(codes_to_indices(actual[wrong]) + 1) % 27]
            kind = "fusion" if name == "fusion" else "model"
            parts.append(
                pd.DataFrame(
                    {
                        "name": name,
                        "kind": kind,
                        "row_id": np.arange(n) + offset,
                        "split": split,
                        "actual": actual,
                        "predicted": pred,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def test_intervals_are_computed_on_each_split_rows():
    preds = _preds()
    iv = U.score_intervals(preds, CFG)
    for split in ("test", "val"):
        part = preds[(preds["split"] == split) & (preds["name"] == "good")]
        expected = scores(part["actual"], part["predicted"])["weighted_f1"]
        hit = iv[(iv["name"] == "good") & (iv["split"] == split) & (iv["score"] == "weighted_f1")].iloc[0]
        assert round(hit["value"], 6) == expected
        assert hit["low"] <= hit["value"] <= hit["high"]
    assert set(iv["score"]) == set(B.SCORES)


def test_rows_must_match_across_names():
    preds = _preds()
    preds.loc[(preds["name"] == "bad") & (preds["split"] == "test"), "row_id"] += 10_000
    with pytest.raises(PipelineError, match="test rows of .* differ"):
        U.score_intervals(preds, CFG)


def test_fusion_gain_is_paired_against_the_best_model_on_test():
    preds = _preds()
    table, _, _ = E.evaluate_predictions(preds)
    best, gain = U.fusion_gain(preds, table, CFG)
    assert best == "good"  # best on test, although `bad` is better on val
    test = preds[preds["split"] == "test"]
    y = test[test["name"] == "good"]["actual"].to_numpy()
    f, g = (test[test["name"] == n]["predicted"].to_numpy() for n in ("fusion", "good"))
    assert gain == B.paired_difference(y, f, g, CFG)


def _table(n: int, split: str, seed: int, temperature: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 27))
    y = logits.argmax(1) if temperature else rng.integers(0, 27, n)
    logits[np.arange(n), y] += 1.0
    flip = rng.random(n) < 0.3
    y[flip] = rng.integers(0, 27, flip.sum())
    p = np.exp(logits / max(temperature, 1e-3))
    p /= p.sum(1, keepdims=True)
    frame = pd.DataFrame(p, columns=list(PROBA_COLUMNS))
    frame.insert(0, "prdtypecode", CODES[y])
    frame.insert(0, "split", split)
    frame.insert(0, "row_id", np.arange(n))
    return frame


def test_calibration_intervals_are_centred_on_the_test_scores():
    table = pd.concat([_table(300, "test", 1, 0.5), _table(300, "val", 2, 3.0)], ignore_index=True)
    est = R.calibration_with_intervals(table, CFG.calibration_bins, CFG)
    proba, y = R.test_arrays(table)
    full = calibration_scores(proba, y, CFG.calibration_bins)
    for k in R.CALIBRATION:
        assert est[k].value == full[k]
        assert est[k].low <= est[k].value <= est[k].high


def test_resampled_calibration_matches_the_scores_of_the_resampled_rows():
    proba, y = R.test_arrays(_table(200, "test", 3, 0.7))
    idx = np.random.default_rng(4).integers(0, 200, size=(3, 200))
    stat = R.calibration_statistic(proba, y, 10)(idx)
    for r in range(3):
        expected = calibration_scores(proba[idx[r]], y[idx[r]], 10)
        assert {k: round(float(stat[k][r]), 6) for k in R.CALIBRATION} == expected


def test_review_on_test_counts_rows_at_or_above_the_threshold():
    # top probabilities 0.9 (right), 0.8 (wrong), 0.8 (right), 0.5 (right)
    p = np.full((4, 27), 0.0)
    p[:, 0] = [0.9, 0.2, 0.8, 0.5]
    p[:, 1] = 1 - p[:, 0]
    y = np.array([0, 0, 0, 1])
    table = pd.DataFrame(p, columns=list(PROBA_COLUMNS))
    table.insert(0, "prdtypecode", CODES[y])
    table.insert(0, "split", "test")
    table.insert(0, "row_id", np.arange(4))
    got = R.review_on_test(table, 0.8, B.BootstrapConfig(resamples=200))
    assert got["coverage"].value == 0.75  # 0.9, 0.8 (row 1: top class 1 at 0.8), 0.8: >= threshold
    assert got["precision"].value == pytest.approx(2 / 3)
    nothing = R.review_on_test(table, 0.95, B.BootstrapConfig(resamples=200))
    assert nothing["coverage"].value == 0.0 and nothing["precision"] is None


def test_risk_coverage_points_run_from_most_confident():
    curve = R.risk_coverage_points(_table(500, "test", 5, 0.5))
    assert curve["coverage"].is_monotonic_increasing and curve["coverage"].iloc[-1] == 1.0
    assert curve["threshold"].is_monotonic_decreasing
    fifth = curve[curve["coverage"] >= 0.2].iloc[0]
    assert fifth["precision"] > curve["precision"].iloc[-1]  # the most confident fifth is the most accurate
    proba, y = R.test_arrays(_table(500, "test", 5, 0.5))
    assert curve["precision"].iloc[-1] == round(float((proba.argmax(1) == y).mean()), 6)


def test_metrics_document_gives_every_score_its_interval():
    preds = _preds()
    table, _, _ = E.evaluate_predictions(preds)
    iv = U.score_intervals(preds, CFG)
    cal = {"fusion": R.calibration_with_intervals(_table(100, "test", 6, 1.0), 10, CFG)}
    review = {"target_precision": 0.98, "threshold": 0.9, "coverage": B.Estimate(0.5, 0.4, 0.6), "precision": None}
    doc = E.metrics_document(E.summary_metrics(table, iv), CFG, U.fusion_gain(preds, table, CFG), cal, review)
    for split in ("test", "val"):
        for name, block in doc[split].items():
            for score in B.SCORES:
                assert {score, f"{score}_low", f"{score}_high"} <= set(block), (split, name)
    assert set(doc["fusion_gain"]) == {"gain", "gain_low", "gain_high", "share_wins"}
    assert doc["fusion_gain_over_best_model"] == doc["fusion_gain"]["gain"]
    keys = (*R.CALIBRATION, "ece_floor")
    assert set(doc["calibration"]["fusion"]) == {f"{k}{s}" for k in keys for s in ("", "_low", "_high")}
    assert doc["review"] == {
        "target_precision": 0.98,
        "threshold": 0.9,
        "coverage": 0.5,
        "coverage_low": 0.4,
        "coverage_high": 0.6,
    }
    assert doc["bootstrap"] == {"resamples": 400, "level": 0.95, "seed": 0}


@pytest.mark.param_effect("evaluate.calibration_bins")
def test_calibration_bins_set_the_reliability_bins_and_the_ece():
    table = _table(400, "test", 8, 0.6)
    coarse = R.calibration_with_intervals(table, 2, CFG)["ece"].value
    fine = R.calibration_with_intervals(table, 20, CFG)["ece"].value
    assert coarse != fine
    assert len(R.reliability_table(table, 20)) == 20 and len(R.reliability_table(table, 2)) == 2
    proba, y = R.test_arrays(table)
    assert fine == round(calibration_scores(proba, y, 20)["ece"], 6)


def test_ece_floor_is_the_ece_of_perfectly_calibrated_outcomes():
    # rows whose top label is right with exactly its confidence: their measured ECE is the floor, not 0
    rng = np.random.default_rng(9)
    conf = rng.uniform(0.3, 1.0, 400)
    proba = np.zeros((400, 27))
    proba[:, 0] = conf
    proba[:, 1:] = ((1 - conf) / 26)[:, None]
    floor = R.ece_floor(proba, 10, CFG)
    simulated = []
    for _ in range(300):
        y = np.where(rng.random(400) < conf, 0, 1)
        simulated.append(calibration_scores(proba, y, 10)["ece"])
    assert floor.mean() == pytest.approx(np.mean(simulated), rel=0.1)
    assert floor.mean() > 0.02  # far from 0 on 400 rows
    assert R.ece_floor(np.tile(proba, (16, 1)), 10, CFG).mean() < floor.mean() / 2.5  # shrinks like 1/sqrt(n)

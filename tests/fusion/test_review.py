"""The human-review threshold: the lowest calibrated top probability whose accepted val rows reach the target."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rakuten.contracts.classes import PROBA_COLUMNS, codes_to_indices
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.fusion import fusion
from rakuten.fusion.review import REVIEW_ALL, ReviewConfig, choose_threshold, risk_coverage
from tests.helpers.fusion_fakes import ALL, FIRST_HALF, SECOND_HALF, make_tables, small_config


def _cases(top: list[float], right: list[bool], k: int = 4):
    """Rows whose top probability is ``top`` (class 0 on top) and whose label is class 0 when ``right``."""
    proba = np.array([[t] + [(1 - t) / (k - 1)] * (k - 1) for t in top])
    y = np.where(right, 0, 1)
    return proba, y


def test_risk_coverage_groups_equal_confidences():
    proba, y = _cases([0.6, 0.9, 0.7, 0.9, 0.8], [False, True, True, False, True])
    curve = risk_coverage(proba, y)
    assert curve.columns.tolist() == ["threshold", "coverage", "precision", "risk"]
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.7, 0.6]  # the two 0.9 rows are accepted together
    assert curve["coverage"].tolist() == pytest.approx([0.4, 0.6, 0.8, 1.0])
    assert curve["precision"].tolist() == pytest.approx([0.5, 2 / 3, 0.75, 0.6])
    assert curve["risk"].tolist() == pytest.approx([0.5, 1 / 3, 0.25, 0.4])


def test_threshold_is_the_lowest_that_reaches_the_target():
    # precision from the top: 0.95 -> 1.0, 0.9 -> 0.5, 0.8 -> 0.667, 0.7 -> 0.75. Target 0.7: 0.95 and 0.7 reach
    # it; the lowest, 0.7, accepts 4 rows (stopping at the first miss from the top would give 0.95, 1 row)
    proba, y = _cases([0.95, 0.9, 0.8, 0.7], [True, False, True, True])
    got = choose_threshold(proba, y, 0.7)
    assert (got.threshold, got.target_met, got.val_coverage, got.val_precision) == (0.7, True, 1.0, 0.75)
    strict = choose_threshold(proba, y, 0.9)
    assert (strict.threshold, strict.val_coverage, strict.val_precision) == (0.95, 0.25, 1.0)
    assert choose_threshold(proba, y, 0.75).threshold == 0.7  # precision equal to the target counts
    assert got.report() == {
        "target_precision": 0.7,
        "threshold": 0.7,
        "target_met": True,
        "val_coverage": 1.0,
        "val_precision": 0.75,
    }


def test_threshold_meets_the_target_and_no_lower_one_does():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(27, 0.2), size=800)
    y = np.where(rng.random(800) < proba.max(1), proba.argmax(1), (proba.argmax(1) + 1) % 27)  # calibrated-ish
    for target in (0.8, 0.9, 0.95):
        got = choose_threshold(proba, y, target)
        conf, right = proba.max(1), proba.argmax(1) == y
        accepted = conf >= got.threshold
        assert right[accepted].mean() >= target and got.val_coverage == accepted.mean()
        for lower in np.unique(conf[conf < got.threshold]):
            assert right[conf >= lower].mean() < target, (target, lower)


def test_unreachable_target_sends_everything_to_review(caplog):
    proba, y = _cases([0.9, 0.8], [False, True])
    with caplog.at_level(logging.WARNING, logger="rakuten.fusion.review"):
        got = choose_threshold(proba, y, 1.0)
    assert got.threshold == REVIEW_ALL > 1.0 and not got.target_met
    assert got.val_coverage == 0.0 and got.val_precision is None
    assert "review.target_precision = 1.0" in caplog.text and "every prediction goes to review" in caplog.text


def test_review_config_bounds_name_the_key():
    assert parse_section(ReviewConfig, {"target_precision": 1.0}, "review").target_precision == 1.0
    for bad in (0.0, 1.5, "high"):
        with pytest.raises(PipelineError, match=r"review\.target_precision = "):
            parse_section(ReviewConfig, {"target_precision": bad}, "review")


@pytest.mark.param_effect("review.target_precision")
def test_target_precision_moves_the_threshold_and_the_coverage():
    tables, _ = make_tables(
        {"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF, "camembert": ALL}, per_class=8, strength=1.5
    )
    cfg = small_config(list(tables))
    results = {
        t: fusion.fuse_tables(tables, ["text", "image", "text"], cfg, review=ReviewConfig(t)) for t in (0.8, 0.95)
    }
    low, high = results[0.8].review, results[0.95].review
    assert low["target_met"] and high["target_met"]
    assert high["threshold"] > low["threshold"] and high["val_coverage"] < low["val_coverage"]
    assert results[0.95].model.review_threshold == pytest.approx(high["threshold"], abs=1e-6)
    # the threshold is read on the val rows' cross-fitted calibrated probabilities the table holds
    table = results[0.8].table
    val = table[table["split"] == "val"]
    proba = val[list(PROBA_COLUMNS)].to_numpy(np.float64)
    right = proba.argmax(1) == codes_to_indices(val["prdtypecode"].to_numpy(np.int64))
    accepted = proba.max(1) >= low["threshold"] - 1e-6
    assert accepted.mean() == pytest.approx(low["val_coverage"], abs=1e-6) and right[accepted].mean() >= 0.8
    # the same model flags the others for review at prediction time (a row at the threshold may sit on either
    # side once the table's float32 rounding is applied)
    flagged = results[0.8].model.needs_review(proba)
    assert flagged.mean() == pytest.approx(1 - low["val_coverage"], abs=1.5 / len(proba))

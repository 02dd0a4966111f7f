"""Bootstrap intervals and paired differences: each test fails if the statistic is computed wrongly
(wrong class set, unpaired resamples, wrong split, a chunking that changes the draws)."""

from __future__ import annotations

import numpy as np
import pytest

from rakuten.contracts.classes import CLASS_CODES
from rakuten.contracts.metrics import scores
from rakuten.evaluation import bootstrap as B

CODES = np.array(CLASS_CODES)


def _labels(n: int, seed: int = 0, classes: int = 27) -> np.ndarray:
    return CODES[np.random.default_rng(seed).integers(0, classes, n)]


def _noisy(y: np.ndarray, error_rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = y.copy()
    wrong = rng.random(len(y)) < error_rate
    out[wrong] = CODES[rng.integers(0, len(CODES), wrong.sum())]
    return out


def test_full_scores_match_the_pipeline_scores_even_with_absent_classes():
    # 10 of 27 classes in the labels, a predicted class absent from them: macro F1 averages over
    # the classes present in labels or predictions (sklearn labels=present), not all 27
    y = _labels(300, classes=10)
    pred = _noisy(y, 0.3, 1)
    pred[:5] = CODES[26]
    expected = scores(y, pred)
    got = {k: round(v, 6) for k, v in B.full_scores(y, pred).items()}
    assert got == expected


def test_each_resample_is_scored_as_its_rows_would_be():
    y, pred = _labels(120, 2), _noisy(_labels(120, 2), 0.4, 3)
    idx = np.random.default_rng(5).integers(0, 120, size=(3, 120))
    stat = B.score_statistic(y, pred)(idx)
    for r in range(3):
        expected = scores(y[idx[r]], pred[idx[r]])
        assert {k: round(float(stat[k][r]), 6) for k in B.SCORES} == expected


def test_interval_brackets_the_score_and_narrows_with_more_rows():
    cfg = B.BootstrapConfig(resamples=1000, seed=0)
    widths = []
    for n in (200, 3200):
        y = _labels(n, 4)
        est = B.scores_with_intervals(y, {"m": _noisy(y, 0.2, 6)}, cfg)["m"]["weighted_f1"]
        assert est.low < est.value < est.high
        widths.append(est.high - est.low)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(16) = 1/4


@pytest.mark.param_effect("evaluate.level", "evaluate.resamples", "evaluate.seed")
def test_level_resamples_and_seed_knobs_have_their_effect():
    y = _labels(400, 7)
    pred = _noisy(y, 0.25, 8)

    def est(**kw):
        return B.scores_with_intervals(y, {"m": pred}, B.BootstrapConfig(**kw))["m"]["accuracy"]

    wide, narrow = est(resamples=2000, level=0.95), est(resamples=2000, level=0.8)
    assert narrow.high - narrow.low < wide.high - wide.low
    assert est(resamples=500, seed=1) == est(resamples=500, seed=1)
    assert est(resamples=500, seed=1) != est(resamples=500, seed=2)
    samples = B.distribution(B.score_statistic(y, pred), len(y), B.BootstrapConfig(resamples=321))
    assert samples["accuracy"].shape == (321,)


def test_chunk_size_never_changes_the_draws(monkeypatch):
    y = _labels(300, 9)
    pred = _noisy(y, 0.3, 10)
    cfg = B.BootstrapConfig(resamples=50, seed=3)
    whole = B.distribution(B.score_statistic(y, pred), len(y), cfg)
    monkeypatch.setattr(B, "CHUNK_CELLS", 7 * 300)  # 7 resamples a chunk
    chunked = B.distribution(B.score_statistic(y, pred), len(y), cfg)
    np.testing.assert_array_equal(whole["weighted_f1"], chunked["weighted_f1"])


def _unpaired_difference(y, a, b, cfg):
    """What a wrong implementation would do: resample a and b independently."""
    da = B.distribution(B.score_statistic(y, a), len(y), cfg)["weighted_f1"]
    db = B.distribution(B.score_statistic(y, b), len(y), B.BootstrapConfig(cfg.resamples, cfg.level, cfg.seed + 1))
    return B.interval(da - db["weighted_f1"], cfg.level)


def test_paired_difference_is_paired():
    # b = a with 12 extra errors on 600 rows: a small but consistent gain. Paired, it is clearly positive;
    # resampling the two independently would drown it in the noise of each score
    y = _labels(600, 11)
    a = _noisy(y, 0.15, 12)
    b = a.copy()
    right = np.flatnonzero(a == y)[:12]
    b[right] = np.where(y[right] == CODES[0], CODES[1], CODES[0])
    cfg = B.BootstrapConfig(resamples=2000, seed=0)
    d = B.paired_difference(y, a, b, cfg)
    assert d.value == pytest.approx(B.full_scores(y, a)["weighted_f1"] - B.full_scores(y, b)["weighted_f1"])
    assert 0 < d.low < d.value < d.high
    assert d.share_a_wins > 0.99
    lo, hi = _unpaired_difference(y, a, b, cfg)
    assert lo < 0 < hi  # the unpaired interval cannot tell
    assert (d.high - d.low) < (hi - lo) / 3


def test_identical_predictors_differ_by_exactly_zero():
    y = _labels(200, 13)
    a = _noisy(y, 0.3, 14)
    d = B.paired_difference(y, a, a.copy(), B.BootstrapConfig(resamples=300))
    assert (d.value, d.low, d.high, d.share_a_wins) == (0.0, 0.0, 0.0, 0.0)


def test_empty_rows_and_length_mismatch_are_errors():
    with pytest.raises(ValueError, match="empty"):
        next(B.resample_chunks(0, B.BootstrapConfig()))
    with pytest.raises(ValueError, match="predictions"):
        B.score_statistic(_labels(5), _labels(4))


def test_estimate_layout_in_metrics():
    assert B.Estimate(0.1234567, 0.1, 0.2).as_dict("ece") == {"ece": 0.123457, "ece_low": 0.1, "ece_high": 0.2}
    assert B.interval(np.array([np.nan, np.nan]), 0.95)[0] != B.interval(np.array([np.nan, np.nan]), 0.95)[0]

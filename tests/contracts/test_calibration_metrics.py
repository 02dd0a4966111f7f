"""Log loss, Brier score, top-label ECE and reliability bins against hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rakuten.contracts.calibration_metrics import (
    bin_index,
    brier,
    calibration_scores,
    ece,
    nll,
    reliability_bins,
)


def test_nll_is_the_mean_log_loss_of_the_true_class_with_clipping():
    proba = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    y = np.array([0, 2])
    # -(ln 0.5 + ln 0.1) / 2; the argmax (row 1: class 1) plays no part
    assert nll(proba, y) == pytest.approx(-(math.log(0.5) + math.log(0.1)) / 2, abs=1e-12)
    certain_miss = np.array([[1.0, 0.0, 0.0]])
    assert nll(certain_miss, [1]) == pytest.approx(-math.log(1e-15), abs=1e-9)  # 34.54, not inf
    assert nll(np.array([[0.0, 1.0]]), [1]) == 0.0


def test_brier_sums_over_classes_and_averages_over_rows():
    proba = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    y = np.array([0, 2])
    # row 0: 0.25 + 0.0625 + 0.0625 = 0.375; row 1: 0.01 + 0.64 + 0.81 = 1.46 -> mean 0.9175
    # (a mean over classes as well would give 0.30583)
    assert brier(proba, y) == pytest.approx(0.9175, abs=1e-12)
    assert brier(np.array([[1.0, 0.0]]), [1]) == pytest.approx(2.0)  # certain and wrong


def _rows(top: list[float], k: int = 3) -> np.ndarray:
    """One row per top probability, class 0 on top, the rest spread over the other classes."""
    return np.array([[t] + [(1 - t) / (k - 1)] * (k - 1) for t in top])


def test_ece_weights_bins_by_their_row_counts():
    # bin (14/15, 1]: four rows at 0.95, three right -> |0.75 - 0.95| = 0.2 on 4 rows
    # bin (7/15, 8/15]: one row at 0.5, right -> |1 - 0.5| = 0.5 on 1 row
    # count-weighted: (4 * 0.2 + 1 * 0.5) / 5 = 0.26; one weight per bin would give 0.35
    proba = _rows([0.95, 0.95, 0.95, 0.95, 0.5])
    y = np.array([0, 0, 0, 1, 0])
    assert ece(proba, y) == pytest.approx(0.26, abs=1e-12)


def test_ece_uses_fifteen_equal_width_bins():
    # 0.46 lies in (6/15, 7/15], 0.48 in (7/15, 8/15]: two bins, gaps 0.54 and 0.48 -> (0.54 + 0.48) / 2 = 0.51.
    # With ten bins both would share (0.4, 0.5]: accuracy 0.5, confidence 0.47 -> 0.03.
    proba = _rows([0.46, 0.48])
    y = np.array([0, 1])
    assert ece(proba, y) == pytest.approx(0.51, abs=1e-12)
    assert ece(proba, y, n_bins=10) == pytest.approx(0.03, abs=1e-12)


def test_ece_reads_the_top_label_not_the_true_class_probability():
    # the top label (class 0, 0.7) is wrong: gap |0 - 0.7| = 0.7; the true class's probability (0.2) plays no part
    proba = np.array([[0.7, 0.2, 0.1]])
    assert ece(proba, [1]) == pytest.approx(0.7, abs=1e-12)


def test_bin_index_edges_close_their_bin():
    assert bin_index(np.array([0.0, 0.1, 0.2, 0.2000001, 0.99, 1.0]), n_bins=5).tolist() == [0, 0, 0, 1, 4, 4]
    with pytest.raises(ValueError, match="n_bins"):
        bin_index(np.array([0.5]), n_bins=0)


def test_reliability_bins_counts_means_and_empty_bins():
    proba = _rows([0.95, 0.95, 0.5, 0.4])
    y = np.array([0, 1, 0, 0])
    bins = reliability_bins(proba, y, n_bins=5)
    assert bins["lo"].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert bins["hi"].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"].tolist() == [0, 1, 1, 0, 2]  # 0.4 closes (0.2, 0.4]
    assert bins["confidence"][[1, 2, 4]].tolist() == pytest.approx([0.4, 0.5, 0.95])
    assert bins["accuracy"][[1, 2, 4]].tolist() == pytest.approx([1.0, 1.0, 0.5])
    assert np.isnan(bins["confidence"][[0, 3]]).all() and np.isnan(bins["accuracy"][[0, 3]]).all()


def test_ece_matches_a_direct_loop_on_random_rows():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(27, 0.3), size=400)
    y = rng.integers(0, 27, 400)
    conf, correct = proba.max(1), proba.argmax(1) == y
    expected = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            expected += inside.sum() / len(y) * abs(correct[inside].mean() - conf[inside].mean())
    assert ece(proba, y) == pytest.approx(expected, abs=1e-12)


def test_calibration_scores_round_to_six_places_and_inputs_are_checked():
    proba = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    got = calibration_scores(proba, [0, 2])
    assert list(got) == ["nll", "ece", "brier"]
    assert got["brier"] == 0.9175 and got["nll"] == round(-(math.log(0.5) + math.log(0.1)) / 2, 6)
    with pytest.raises(ValueError, match="expected proba"):
        nll(proba, [0])
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\)"):
        brier(proba, [0, 3])
    with pytest.raises(ValueError, match="empty"):
        ece(np.zeros((0, 3)), np.zeros(0, dtype=int))

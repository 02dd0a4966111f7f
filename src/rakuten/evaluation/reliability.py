"""Can the probabilities be trusted, and what does the review threshold deliver on test? With intervals.

Calibration (top-label ECE, NLL, Brier; :mod:`rakuten.contracts.calibration_metrics`) of every model, of
the fused output and of the fused output before calibration; the review threshold chosen on val by the
fusion stage (:mod:`rakuten.fusion.review`), scored on test: coverage (share auto-accepted) and the
precision of the accepted rows, each with a bootstrap interval drawn from the same resamples as the
scores (:mod:`rakuten.evaluation.bootstrap`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rakuten.contracts.calibration_metrics import (
    bin_index,
    brier_per_row,
    calibration_scores,
    nll_per_row,
    reliability_bins,
)
from rakuten.contracts.classes import PROBA_COLUMNS, codes_to_indices
from rakuten.evaluation.bootstrap import BootstrapConfig, Estimate, Statistic, distribution, estimate

CALIBRATION = ("ece", "nll", "brier")
#: points kept of the risk-coverage curve for the report and the DVC plot (evenly spaced in coverage)
CURVE_POINTS = 101


def test_arrays(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The test rows of a probability table, by row_id: ``(proba (n, 27), true class indices (n,))``."""
    test = table[table["split"].astype(str) == "test"].sort_values("row_id", kind="stable")
    return (
        test[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64),
        codes_to_indices(test["prdtypecode"].to_numpy(dtype=np.int64)),
    )


def calibration_statistic(proba: np.ndarray, y_idx: np.ndarray, n_bins: int) -> Statistic:
    """ECE, NLL and Brier of resampled rows. ECE = sum over bins of |sum of confidences - sum of hits| / n,
    the count-weighted gap of :func:`rakuten.contracts.calibration_metrics.ece`, from two bincounts."""
    p = np.asarray(proba, dtype=np.float64)
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == y_idx).astype(np.float64)
    bins = bin_index(conf, n_bins)
    row_nll, row_brier = nll_per_row(p, y_idx), brier_per_row(p, y_idx)

    def stat(idx: np.ndarray) -> dict[str, np.ndarray]:
        b, n = idx.shape
        cells = (bins[idx] + (np.arange(b) * n_bins)[:, None]).ravel()
        sum_conf = np.bincount(cells, weights=conf[idx].ravel(), minlength=b * n_bins).reshape(b, n_bins)
        sum_hit = np.bincount(cells, weights=hit[idx].ravel(), minlength=b * n_bins).reshape(b, n_bins)
        return {
            "ece": np.abs(sum_conf - sum_hit).sum(axis=1) / n,
            "nll": row_nll[idx].mean(axis=1),
            "brier": row_brier[idx].mean(axis=1),
        }

    return stat


def calibration_with_intervals(table: pd.DataFrame, n_bins: int, cfg: BootstrapConfig) -> dict[str, Estimate]:
    """ECE, NLL and Brier of a probability table's test rows, each with its bootstrap interval, and the ECE a
    perfectly calibrated model would show on these rows (``ece_floor``, :func:`ece_floor`)."""
    proba, y = test_arrays(table)
    full = calibration_scores(proba, y, n_bins)
    samples = distribution(calibration_statistic(proba, y, n_bins), len(y), cfg)
    out = {k: estimate(full[k], samples[k], cfg.level) for k in CALIBRATION}
    floor = ece_floor(proba, n_bins, cfg)
    return {**out, "ece_floor": estimate(float(np.mean(floor)), floor, cfg.level)}


#: draws of :func:`ece_floor` (each a whole test set of simulated outcomes; cheap: one bincount a draw)
FLOOR_DRAWS = 2000


def ece_floor(proba: np.ndarray, n_bins: int, cfg: BootstrapConfig) -> np.ndarray:
    """The ECE of a PERFECTLY calibrated model with these confidences on this many rows: each row's top
    label drawn right with probability equal to its confidence, :data:`FLOOR_DRAWS` times.

    Why: binned ECE is biased upward on a finite test set (each bin's accuracy is a noisy estimate), so
    even perfect probabilities score above 0; an ECE inside this range is as good as the rows can show."""
    conf = np.asarray(proba, dtype=np.float64).max(axis=1)
    bins = bin_index(conf, n_bins)
    rng = np.random.default_rng(cfg.seed)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    draws = []
    for start in range(0, FLOOR_DRAWS, max(1, (1 << 21) // len(conf))):  # chunks: memory linear in the rows
        b = min(max(1, (1 << 21) // len(conf)), FLOOR_DRAWS - start)
        hits = rng.random((b, len(conf))) < conf
        cells = (bins[None, :] + (np.arange(b) * n_bins)[:, None]).ravel()
        sum_hit = np.bincount(cells, weights=hits.ravel(), minlength=b * n_bins).reshape(b, n_bins)
        draws.append(np.abs(sum_hit - sum_conf[None, :]).sum(axis=1) / len(conf))
    return np.concatenate(draws)


def reliability_table(table: pd.DataFrame, n_bins: int) -> pd.DataFrame:
    """The reliability diagram's bins of a probability table's test rows (lo, hi, count, confidence, accuracy)."""
    proba, y = test_arrays(table)
    return pd.DataFrame(reliability_bins(proba, y, n_bins))


def review_statistic(proba: np.ndarray, y_idx: np.ndarray, threshold: float) -> Statistic:
    """Coverage (share of rows whose top probability reaches ``threshold``: auto-accepted, as
    :meth:`rakuten.fusion.model.FusedModel.needs_review` decides) and the precision of those rows
    (NaN in a resample that accepts nothing)."""
    p = np.asarray(proba, dtype=np.float64)
    accepted = p.max(axis=1) >= threshold
    right = accepted & (p.argmax(axis=1) == y_idx)

    def stat(idx: np.ndarray) -> dict[str, np.ndarray]:
        n_acc = accepted[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = right[idx].sum(axis=1) / n_acc
        return {"coverage": n_acc / idx.shape[1], "precision": precision}

    return stat


def review_on_test(table: pd.DataFrame, threshold: float, cfg: BootstrapConfig) -> dict[str, Estimate | None]:
    """The review threshold on the fused table's test rows: coverage and precision of the accepted rows,
    with intervals (precision None when no test row is accepted)."""
    proba, y = test_arrays(table)
    stat = review_statistic(proba, y, threshold)
    full = {k: float(v[0]) for k, v in stat(np.arange(len(y))[None, :]).items()}
    samples = distribution(stat, len(y), cfg)
    return {
        "coverage": estimate(full["coverage"], samples["coverage"], cfg.level),
        "precision": None
        if not np.isfinite(full["precision"])
        else estimate(full["precision"], samples["precision"], cfg.level),
    }


def risk_coverage_points(table: pd.DataFrame, points: int = CURVE_POINTS) -> pd.DataFrame:
    """The test risk-coverage curve (rows ordered by falling top probability): ``coverage, precision,
    threshold`` at ``points`` evenly spaced coverages (each the first row count reaching that coverage)."""
    proba, y = test_arrays(table)
    conf = proba.max(axis=1)
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(proba.argmax(axis=1)[order] == y[order])
    n = len(y)
    counts = np.unique(np.clip(np.ceil(np.linspace(0, 1, points) * n).astype(int), 1, n))
    return pd.DataFrame(
        {
            "coverage": np.round(counts / n, 6),
            "precision": np.round(hits[counts - 1] / counts, 6),
            "threshold": np.round(conf[order][counts - 1], 6),
        }
    )

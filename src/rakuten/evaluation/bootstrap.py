"""Bootstrap confidence intervals for every reported score, and paired differences between two predictors.

Why: a score on 500 test rows is a point estimate whose noise is as large as most differences the
pipeline reports (one row moves a class's share by 0.2 points). Resampling the test rows with
replacement gives each score an interval; resampling the SAME rows for two predictors (a paired
bootstrap) gives their difference an interval much narrower than the two intervals suggest, because
both are scored on the same hard and easy rows.

Every statistic here is computed from the resampled row indices, in chunks of resamples so memory stays
linear in the rows whatever the number of resamples. The same ``(resamples, seed)`` draws the same
resamples for every predictor and statistic, so any two distributions computed with one config are
paired, resample by resample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import numpy as np

from rakuten.contracts.classes import CLASS_CODES, codes_to_indices
from rakuten.core.config import knob

#: most resampled indices held at once (resamples x rows of one chunk): 2M int64, 16 MB
CHUNK_CELLS = 1 << 21
#: the classification scores bootstrapped for every predictor, as in rakuten.contracts.metrics.scores
SCORES = ("weighted_f1", "macro_f1", "accuracy")
K = len(CLASS_CODES)

#: a statistic of resampled rows: (resamples, n) row indices -> {name: (resamples,) values}
Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BootstrapConfig:
    """How the intervals are drawn: resamples of the scored rows, the confidence level, the seed."""

    resamples: int = knob(
        20_000,
        "bootstrap resamples of the scored rows per interval (20000: a bound's standard deviation between "
        "seeds is at most 0.0004 on 503 test rows, bench/bootstrap.py)",
        lo=100,
        hi=1_000_000,
    )
    level: float = knob(0.95, "confidence level of every interval (percentile bootstrap)", lo=0.5, hi=1.0, hi_open=True)
    seed: int = knob(0, "seed of the resamples: the same seed draws the same resamples for every model", lo=0)


@dataclass(frozen=True)
class Estimate:
    """A score on all rows and its bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self, key: str) -> dict[str, float]:
        """``{key: value, key_low: low, key_high: high}``, rounded to 6 places (the metrics.json layout)."""
        return {key: round(self.value, 6), f"{key}_low": round(self.low, 6), f"{key}_high": round(self.high, 6)}


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` on all rows, its paired-bootstrap interval, and the share of resamples where a beats b."""

    value: float
    low: float
    high: float
    share_a_wins: float

    def as_dict(self) -> dict[str, float]:
        return {
            "gain": round(self.value, 6),
            "gain_low": round(self.low, 6),
            "gain_high": round(self.high, 6),
            "share_wins": round(self.share_a_wins, 6),
        }


def resample_chunks(n: int, cfg: BootstrapConfig) -> Iterator[np.ndarray]:
    """The resamples of ``n`` rows as (chunk, n) index arrays, the same sequence for the same ``n`` and config."""
    if n <= 0:
        raise ValueError("cannot bootstrap an empty set of rows")
    rng = np.random.default_rng(cfg.seed)
    per_chunk = max(1, CHUNK_CELLS // n)
    done = 0
    while done < cfg.resamples:
        b = min(per_chunk, cfg.resamples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def distribution(stat: Statistic, n: int, cfg: BootstrapConfig) -> dict[str, np.ndarray]:
    """Every value of ``stat`` over the resamples: {name: (resamples,) array}."""
    parts: dict[str, list[np.ndarray]] = {}
    for idx in resample_chunks(n, cfg):
        for name, values in stat(idx).items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of ``samples`` at ``level`` (NaN resamples, e.g. nothing accepted, left out)."""
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def estimate(value: float, samples: np.ndarray, level: float) -> Estimate:
    return Estimate(float(value), *interval(samples, level))


# ---------------------------------------------------------------------------------- classification scores


def confusion_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted F1, macro F1 and accuracy of stacked confusion matrices (..., K, K), rows actual.

    The classes scored are those present among the actual or predicted labels, as
    :func:`rakuten.contracts.metrics.scores` does (sklearn's ``labels=present``).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    n = support.sum(axis=-1)
    present = (denom > 0).sum(axis=-1)
    return {
        "weighted_f1": (f1 * support).sum(axis=-1) / n,
        "macro_f1": f1.sum(axis=-1) / np.maximum(present, 1),
        "accuracy": tp.sum(axis=-1) / n,
    }


def _cells(y_true, y_pred) -> np.ndarray:
    """Each row's confusion-matrix cell (actual * K + predicted) from class codes."""
    t = codes_to_indices(np.asarray(y_true, dtype=np.int64))
    p = codes_to_indices(np.asarray(y_pred, dtype=np.int64))
    if len(t) != len(p):
        raise ValueError(f"{len(t)} actual labels but {len(p)} predictions")
    return t * K + p


def resampled_confusions(cells: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(resamples, K, K) confusion matrices of the resampled rows (one bincount, linear in the cells)."""
    b = idx.shape[0]
    flat = cells[idx] + (np.arange(b) * (K * K))[:, None]
    return np.bincount(flat.ravel(), minlength=b * K * K).reshape(b, K, K)


def score_statistic(y_true, y_pred, prefix: str = "") -> Statistic:
    """The :data:`SCORES` of one predictor as a statistic (keys ``prefix + score``)."""
    cells = _cells(y_true, y_pred)

    def stat(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {prefix + k: v for k, v in confusion_scores(resampled_confusions(cells, idx)).items()}

    return stat


def full_scores(y_true, y_pred) -> dict[str, float]:
    """The :data:`SCORES` on all rows (what the intervals are centred on)."""
    cells = _cells(y_true, y_pred)
    cm = np.bincount(cells, minlength=K * K).reshape(K, K)
    return {k: float(v) for k, v in confusion_scores(cm).items()}


def scores_with_intervals(
    y_true, predictions: Mapping[str, np.ndarray], cfg: BootstrapConfig
) -> dict[str, dict[str, Estimate]]:
    """{predictor: {score: Estimate}} for predictors scored on the same rows (all paired: same resamples)."""
    stats = {name: score_statistic(y_true, pred, f"{name}\t") for name, pred in predictions.items()}

    def combined(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v for stat in stats.values() for k, v in stat(idx).items()}

    samples = distribution(combined, len(np.asarray(y_true)), cfg)
    out: dict[str, dict[str, Estimate]] = {}
    for name, pred in predictions.items():
        full = full_scores(y_true, pred)
        out[name] = {k: estimate(full[k], samples[f"{name}\t{k}"], cfg.level) for k in SCORES}
    return out


def paired_difference(y_true, pred_a, pred_b, cfg: BootstrapConfig, score: str = "weighted_f1") -> PairedDifference:
    """``score(a) - score(b)`` with its paired-bootstrap interval: both scored on the same resampled rows."""
    stat_a, stat_b = score_statistic(y_true, pred_a, "a\t"), score_statistic(y_true, pred_b, "b\t")

    def diff(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"d": stat_a(idx)[f"a\t{score}"] - stat_b(idx)[f"b\t{score}"]}

    samples = distribution(diff, len(np.asarray(y_true)), cfg)["d"]
    value = full_scores(y_true, pred_a)[score] - full_scores(y_true, pred_b)[score]
    low, high = interval(samples, cfg.level)
    return PairedDifference(float(value), low, high, float((samples > 0).mean()))

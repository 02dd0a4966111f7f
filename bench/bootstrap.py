"""How many bootstrap resamples the intervals need, and what they cost (not a test).

For the fused model's test weighted F1 and its paired gain over the best single model (the tables of
the last `dvc repro`: reports/probs/*.parquet), draws the 95 % interval with ``--seeds`` different seeds
at each resample count, and reports how far the bounds move between seeds (max - min and standard
deviation) and the time per interval: the figures behind the default ``evaluate.resamples``. Also times
the evaluate stage's whole set of score intervals at the default count on ``--rows`` constructed rows (the
full-size test split: 8,492). Writes reports/bench/bootstrap.json.

    python bench/bootstrap.py
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from rakuten.contracts.classes import CLASS_CODES, PROBA_COLUMNS, indices_to_codes
from rakuten.contracts.model_files import read_probs
from rakuten.contracts.registry import MODELS
from rakuten.core.io import write_json
from rakuten.evaluation.bootstrap import BootstrapConfig, full_scores, paired_difference, scores_with_intervals

COUNTS = (1000, 2000, 5000, 10_000, 20_000)


def test_predictions() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Actual codes of the test rows and each model's and the fusion's predicted codes, by row_id."""
    out, actual = {}, None
    for name in [*MODELS, "fusion"]:
        t = read_probs(name)
        t = t[t["split"].astype(str) == "test"].sort_values("row_id")
        actual = t["prdtypecode"].to_numpy(dtype=np.int64)
        out[name] = indices_to_codes(t[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1))
    return actual, out


def spread(values: list[float]) -> dict[str, float]:
    return {"range": round(max(values) - min(values), 5), "sd": round(float(np.std(values, ddof=1)), 5)}


def stability(actual, preds, best: str, seeds: int) -> list[dict]:
    rows = []
    for count in COUNTS:
        lows, highs, glows, ghighs, times = [], [], [], [], []
        for seed in range(seeds):
            cfg = BootstrapConfig(resamples=count, seed=seed)
            start = time.perf_counter()
            est = scores_with_intervals(actual, {"fusion": preds["fusion"]}, cfg)["fusion"]["weighted_f1"]
            times.append(time.perf_counter() - start)
            gain = paired_difference(actual, preds["fusion"], preds[best], cfg)
            lows.append(est.low), highs.append(est.high), glows.append(gain.low), ghighs.append(gain.high)
        rows.append(
            {
                "resamples": count,
                "fusion_low": spread(lows),
                "fusion_high": spread(highs),
                "gain_low": spread(glows),
                "gain_high": spread(ghighs),
                "seconds_per_interval": round(float(np.median(times)), 3),
            }
        )
        print(
            f"{count:>7} resamples: fusion bounds move {rows[-1]['fusion_low']['range']:.4f} / "
            f"{rows[-1]['fusion_high']['range']:.4f}, gain bounds {rows[-1]['gain_low']['range']:.4f} / "
            f"{rows[-1]['gain_high']['range']:.4f} between {seeds} seeds; {rows[-1]['seconds_per_interval']} s"
        )
    return rows


def full_size_time(rows: int, names: int, resamples: int) -> float:
    """Seconds for ``names`` predictors' intervals on ``rows`` constructed rows (80 % right)."""
    rng = np.random.default_rng(0)
    codes = np.array(CLASS_CODES)
    actual = codes[rng.integers(0, len(codes), rows)]
    preds = {}
    for i in range(names):
        p = actual.copy()
        wrong = rng.random(rows) < 0.2
        p[wrong] = codes[rng.integers(0, len(codes), wrong.sum())]
        preds[f"m{i}"] = p
    start = time.perf_counter()
    scores_with_intervals(actual, preds, BootstrapConfig(resamples=resamples))
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=8_492)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/bootstrap.json"))
    args = parser.parse_args()
    actual, preds = test_predictions()
    best = max(MODELS, key=lambda n: full_scores(actual, preds[n])["weighted_f1"])
    rows = stability(actual, preds, best, args.seeds)
    chosen = BootstrapConfig().resamples
    names = len(MODELS) + 8  # the models, the chosen fusion and the 7 strategies
    seconds = full_size_time(args.rows, names, chosen)
    print(f"{names} predictors x {chosen} resamples on {args.rows} rows: {seconds} s")
    write_json(
        {
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
            "test_rows": int(len(actual)),
            "best_model": best,
            "seeds": args.seeds,
            "stability": rows,
            "default_resamples": chosen,
            "full_size": {"rows": args.rows, "predictors": names, "seconds": seconds},
        },
        args.out,
    )


if __name__ == "__main__":
    main()

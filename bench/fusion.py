"""Benchmark of the fusion stage's fitting: time per strategy (out-of-fold CV + final fit) and peak memory.

Constructed probability tables (one per model of fusion.models, the study's split sizes by default: 8,492
val rows) so it runs before the model stages exist: a text model knows the first half of the classes, an
image model the second half, a multimodal one all of them. Only library functions are timed
(rakuten.fusion.selection). Prints a table and writes reports/bench/fusion.json.

    python bench/fusion.py                      # real-scale val set (8,492 rows)
    python bench/fusion.py --val-rows 1000      # reduced, on a busy machine
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from rakuten.contracts import registry
from rakuten.contracts.classes import N_CLASSES
from rakuten.core.config import from_params
from rakuten.core.io import write_json
from rakuten.core.params import load_params
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.selection import cross_val_proba, cv_splits, strategy_factories
from rakuten.fusion.weights import weighted_f1

#: the classes a constructed model of each modality knows
KNOWS = {
    "text": range(N_CLASSES // 2 + 1),
    "image": range(N_CLASSES // 2 + 1, N_CLASSES),
    "multimodal": range(N_CLASSES),
}


def model_proba(y: np.ndarray, knows: range, strength: float, seed: int) -> np.ndarray:
    """Softmax of noisy logits; rows whose class is in ``knows`` get ``strength`` on the true class."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (len(y), N_CLASSES))
    mask = np.isin(y, list(knows))
    logits[mask, y[mask]] += strength
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val-rows", type=int, default=8492, help="validation rows (study: 8,492)")
    parser.add_argument("--n-jobs", type=int, default=None, help="override fusion.n_jobs")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/fusion.json"))
    args = parser.parse_args()

    cfg = from_params(FusionConfig, load_params(), "fusion")
    if args.n_jobs:
        cfg = replace(cfg, n_jobs=args.n_jobs)
    rng = np.random.default_rng(0)
    y = rng.integers(0, N_CLASSES, args.val_rows)
    knows = [KNOWS[registry.spec(m).modality] for m in cfg.models]
    probs = [model_proba(y, k, strength=2.5, seed=i) for i, k in enumerate(knows)]
    splits = cv_splits(y, None, cfg.cv_folds, cfg.seed)

    rows = []
    for name, factory in strategy_factories(cfg).items():
        start = time.perf_counter()
        oof = cross_val_proba(factory, probs, y, splits)
        cv_s = time.perf_counter() - start
        start = time.perf_counter()
        fitted = factory().fit(probs, y)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        fitted.predict_proba(probs)
        predict_s = time.perf_counter() - start
        rows.append(
            {
                "strategy": name,
                "cv_s": round(cv_s, 2),
                "fit_s": round(fit_s, 2),
                "predict_s": round(predict_s, 3),
                "val_cv_weighted_f1": round(weighted_f1(y, oof), 4),
            }
        )
        print(
            f"{name:22s} cv {cv_s:8.2f} s  fit {fit_s:7.2f} s  predict {predict_s:6.3f} s  "
            f"val CV wF1 {rows[-1]['val_cv_weighted_f1']:.4f}",
            flush=True,
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(r["cv_s"] + r["fit_s"] for r in rows)
    print(
        f"total fit time {total:.1f} s, peak RSS {peak_mib:.0f} MiB "
        f"({args.val_rows} val rows, {len(cfg.models)} models, {cfg.cv_folds} folds, n_jobs {cfg.n_jobs})"
    )
    write_json(
        {
            "val_rows": args.val_rows,
            "models": cfg.models,
            "cv_folds": cfg.cv_folds,
            "n_jobs": cfg.n_jobs,
            "xgboost": asdict(cfg.xgboost),
            "strategies": rows,
            "total_fit_s": round(total, 1),
            "peak_rss_mib": round(peak_mib),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "note": "constructed probabilities (bench/fusion.py, by modality); timings on a shared 2-core machine",
        },
        args.out,
    )


if __name__ == "__main__":
    main()

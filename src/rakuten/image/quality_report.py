"""``reports/image_quality.json``: row accounting, counts per defect, score distributions, the
duplicate policy's effect and (with ground truth) each detector's precision and recall."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rakuten.image.config import ImageCleanConfig


def _percentiles(values: pd.Series) -> dict[str, float]:
    values = values.dropna().to_numpy(float)
    if not len(values):
        return {}
    qs = (1, 5, 25, 50, 75, 95, 99)
    return {f"p{q}": round(float(v), 4) for q, v in zip(qs, np.percentile(values, qs))}


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return round(float(values.mean()), 4) if len(values) else None


def quality_report(
    table: pd.DataFrame,
    cfg: ImageCleanConfig,
    splits: pd.Series | None = None,
    detection: tuple[dict, int] | None = None,
) -> dict[str, Any]:
    """The summary document; ``detection`` is :func:`rakuten.image.scoring.score_detectors`'s
    ``(scores, n_missing)`` when ground truth exists (sample catalog)."""
    exact = table["exact_dup_group"]
    near = table["near_dup_group"]
    red = table[table["is_red_cast"]]
    report: dict[str, Any] = {
        "rows": int(len(table)),
        "images_written": int(len(table)),
        "readable": int(table["readable"].sum()),
        "placeholders": int((~table["readable"]).sum()),
        "decode_status": {str(k): int(v) for k, v in table["decode_status"].value_counts().sort_index().items()},
        "counts": {
            "exact_duplicate_groups": int(exact.max() + 1) if len(table) else 0,
            "exact_duplicate_rows": int((exact >= 0).sum()),
            "near_duplicate_clusters": int(near.max() + 1) if len(table) else 0,
            "near_duplicate_rows": int((near >= 0).sum()),
            "blurry": int(table["is_blurry"].sum()),
            "red_cast": int(table["is_red_cast"].sum()),
            "border": int(table["has_border"].sum()),
        },
        "blur_score": _percentiles(table["blur_score"]),
        "red_ratio": _percentiles(table["red_ratio"]),
        "red_cast_correction": {
            "method": cfg.red_cast.method,
            "red_ratio_before_mean": _mean(red["red_ratio"]),
            "red_ratio_after_mean": _mean(red["red_ratio_after"]),
        },
        "border_fraction_of_cropped_mean": _mean(table.loc[table["has_border"], "border_fraction"]),
        "duplicate_policy": {
            "rows_not_kept_for_train": int((~table["keep_for_train"] & table["readable"]).sum()),
            "rows_with_reduced_weight": int((table["sample_weight"] < 1).sum()),
            "cross_class_weight": cfg.near_duplicates.cross_class_weight,
        },
    }
    if splits is not None:
        frame = pd.DataFrame({"group": near.to_numpy(), "split": splits.to_numpy()})
        frame = frame[frame["group"] >= 0]
        labelled = frame[frame["split"] != "official_test"]
        # 0 by construction since the split reads image_hash: a non-zero count means a leak
        spanning = labelled.groupby("group")["split"].nunique() > 1
        report["duplicate_policy"]["clusters_spanning_splits"] = int(spanning.sum())
        # unlabelled official-test rows may look like training rows: informative, not a leak
        official = frame.assign(official=frame["split"] == "official_test").groupby("group")["official"]
        shared = official.any() & ~official.all()
        report["duplicate_policy"]["clusters_shared_with_official_test"] = int(shared.sum())
        train = splits.to_numpy() == "train"
        report["duplicate_policy"]["train_rows"] = int(train.sum())
        report["duplicate_policy"]["train_rows_kept"] = int((table["keep_for_train"].to_numpy() & train).sum())
    if detection is not None:
        report["detection"], report["ground_truth_files_not_in_catalog"] = detection
    return report

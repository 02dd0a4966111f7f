"""``report``: the knobs of ``reports/report.html`` (:mod:`rakuten.core.config`) and what it is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd
from PIL import Image

from rakuten.core.config import knob
from rakuten.evaluation.bootstrap import Estimate, PairedDifference

#: overlay of the image model's Grad-CAM: (cleaned image path, class index, side in px) -> picture
Explainer = Callable[[str, int, int], Image.Image]


@dataclass(frozen=True)
class ReportConfig:
    """``report``: what ``reports/report.html`` shows and how large its pictures are."""

    top_pairs: int = knob(
        10,
        "most confused (actual, predicted) class pairs of the fused model on test shown "
        "with examples, by count (ties: smaller codes first); 0 = none",
        lo=0,
        hi=100,
    )
    examples_per_pair: int = knob(3, "test products shown per confused pair (smallest row_id first)", lo=0, hi=20)
    gradcam_examples: int = knob(
        4,
        "Grad-CAM overlays of the image model: this many correctly and this many "
        "wrongly classified test products (smallest row_id first); 0 = none, and "
        "the image model is not loaded",
        lo=0,
        hi=32,
    )
    label_issues: int = knob(
        12,
        "training rows flagged by the label audit shown with their photo (most suspicious first); 0 = none",
        lo=0,
        hi=200,
    )
    thumbnail: int = knob(96, "longest side (px) of the example thumbnails of the confused pairs", lo=16, hi=512)
    gradcam_size: int = knob(160, "side (px) of the Grad-CAM overlays", lo=16, hi=512)
    jpeg_quality: int = knob(
        80,
        "JPEG quality of thumbnails, overlays and the re-encoded contact sheets: "
        "detail vs report size (the default run stays well under 3 MB)",
        lo=10,
        hi=95,
    )


@dataclass(frozen=True)
class ReportInputs:
    """What the report is built from; the evaluate stage reads all of it (dvc.yaml lists each file)."""

    table: pd.DataFrame  # rakuten.evaluation.evaluate.evaluate_predictions' summary table
    per_class: Mapping[str, pd.DataFrame]  # its per-class reports on test, by name
    chosen: str  # reports/fusion.json "chosen" (the strategy, without fusion_)
    data_source: str  # data.source
    n_rows: Mapping[str, int]  # rows per split of the fused table
    fused: pd.DataFrame  # reports/probs/fusion.parquet
    image_probs: pd.DataFrame  # reports/probs/<image model>.parquet (rakuten.evaluation.report.image_model)
    titles: pd.Series  # designation by row_id (data/interim/catalog.parquet)
    images: pd.DataFrame  # row_id, clean_path, readable (data/processed/image_quality.parquet)
    contact_sheets: Sequence[Path] = ()  # reports/figures/image_clean/*.png, sorted
    level: float = 0.95  # the bootstrap intervals' confidence level (evaluate.level)
    intervals: pd.DataFrame | None = None  # rakuten.evaluation.uncertainty.score_intervals
    paired_gain: tuple[str, PairedDifference] | None = None  # rakuten.evaluation.uncertainty.fusion_gain
    calibration: Mapping[str, Mapping[str, Estimate]] = field(default_factory=dict)  # name -> ece/nll/brier
    reliability: Mapping[str, pd.DataFrame] = field(default_factory=dict)  # fused before/after: reliability bins
    calibration_method: str = "none"  # reports/fusion.json calibration.method
    review: Mapping | None = None  # threshold, target_precision, coverage and precision Estimates on test
    risk_curve: pd.DataFrame | None = None  # rakuten.evaluation.reliability.risk_coverage_points
    label_issues: pd.DataFrame | None = None  # reports/label_issues.csv
    label_audit: Mapping | None = None  # reports/label_audit.json

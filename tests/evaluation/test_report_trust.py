"""The report's trust sections: intervals in the scores table, calibration with reliability diagrams,
the review threshold with its risk-coverage curve, and the label audit with thumbnails."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rakuten.core.errors import PipelineError
from rakuten.evaluation.bootstrap import Estimate, PairedDifference
from rakuten.evaluation.report.config import ReportConfig
from rakuten.evaluation.report.label_issues import label_issues_html, read_label_issues
from rakuten.evaluation.report.sections import metrics_html
from rakuten.evaluation.report.trust import calibration_html, reliability_svg, review_html, risk_coverage_svg

EVIL = '<script>alert("x")</script>'


def _bins() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lo": [0.0, 0.5],
            "hi": [0.5, 1.0],
            "count": [0, 10],
            "confidence": [np.nan, 0.8],
            "accuracy": [np.nan, 0.6],
        }
    )


def test_reliability_svg_draws_filled_bins_only_and_is_stable():
    svg = reliability_svg(_bins(), "fusion")
    assert svg.count("<rect") == 2  # the frame and the one filled bin
    assert "10 rows, accuracy 0.600, mean confidence 0.800" in svg
    assert svg == reliability_svg(_bins(), "fusion")


def test_calibration_section_lists_every_name_with_intervals():
    cal = {
        "tfidf_svm": {k: Estimate(0.1, 0.05, 0.15) for k in ("ece", "nll", "brier")},
        "fusion": {k: Estimate(0.02, 0.01, 0.03) for k in ("ece", "nll", "brier")},
    }
    html = calibration_html(cal, {"fusion_uncalibrated": _bins(), "fusion": _bins()}, "temperature", 0.95)
    assert "<b>temperature</b>" in html and html.count("<svg") == 2
    assert "0.0200 [0.0100, 0.0300]" in html and "tfidf_svm" in html
    assert "No calibration" in calibration_html({}, {}, "none", 0.95)


def test_review_section_shows_threshold_coverage_and_precision():
    curve = pd.DataFrame({"coverage": [0.1, 0.5, 1.0], "precision": [1.0, 0.98, 0.85], "threshold": [0.99, 0.9, 0.2]})
    review = {
        "target_precision": 0.98,
        "threshold": 0.9,
        "coverage": Estimate(0.5, 0.45, 0.55),
        "precision": Estimate(0.981, 0.97, 0.99),
    }
    html = review_html(review, curve, 0.95)
    assert "0.9000" in html and "50.0% [45.0%, 55.0%]" in html and "98.1% [97.0%, 99.0%]" in html
    assert "needs_review" in html and "<polyline" in html
    assert 'r="3.5"' in risk_coverage_svg(curve, 0.98, 0.5)  # the operating point
    assert 'r="3.5"' not in risk_coverage_svg(curve, 0.98, 0.0)
    none = {**review, "coverage": Estimate(0.0, 0.0, 0.0), "precision": None}
    assert "—" in review_html(none, curve, 0.95)


def test_metrics_table_carries_intervals_and_the_paired_gain():
    table = pd.DataFrame(
        {
            "name": ["tfidf_svm", "fusion"],
            "kind": ["model", "fusion"],
            "val_weighted_f1": [0.8, 0.85],
            "test_weighted_f1": [0.81, 0.86],
            "test_macro_f1": [0.7, 0.75],
            "test_accuracy": [0.8, 0.85],
        }
    )
    iv = pd.DataFrame(
        [("fusion", "test", "weighted_f1", 0.86, 0.83, 0.89)],
        columns=["name", "split", "score", "value", "low", "high"],
    )
    html = metrics_html(
        table, "soft_vote", "sample", {"test": 2}, iv, ("tfidf_svm", PairedDifference(0.05, 0.01, 0.09, 0.99))
    )
    assert '0.8600<br><small class="ci">[0.8300, 0.8900]</small>' in html
    assert "+0.0500" in html and "[+0.0100, +0.0900]" in html and "99.0%" in html
    assert "<small" not in metrics_html(table, "soft_vote", "sample", {"test": 2})


@pytest.mark.param_effect("report.label_issues")
def test_label_audit_section_shows_flagged_rows_with_photo_and_both_labels(tmp_path: Path):
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.jpg")
    issues = pd.DataFrame({"row_id": [7, 3], "given": [10, 2583], "suggested": [40, 2585], "score": [0.01, 0.2]})
    audit = {"rows_audited": 100, "flagged": 2, "ground_truth": {"precision": 0.5, "recall": 1.0}}
    html = label_issues_html(issues, audit, {7: EVIL, 3: "piscine"}, {7: str(tmp_path / "a.jpg")}, ReportConfig())
    assert EVIL not in html and "&lt;script&gt;" in html  # titles are escaped
    assert html.index("#7") < html.index("#3")  # most suspicious first, as the CSV is ordered
    assert html.count("<img") == 1  # row 3 has no cleaned image: shown without one
    assert "given <b>10 " in html and "suggested <b>40 " in html
    assert re.search(r"precision against the planted noise</td><td>0\.500", html)
    few = label_issues_html(issues, audit, {}, {}, ReportConfig(label_issues=1))
    assert "#7" in few and "#3" not in few  # the report.label_issues knob
    assert "dvc repro label_audit" in label_issues_html(None, None, {}, {}, ReportConfig())
    assert "precision against" not in label_issues_html(
        issues, {"rows_audited": 100, "flagged": 2}, {}, {}, ReportConfig()
    )


def test_label_issues_file_errors_name_the_stage(tmp_path: Path):
    (tmp_path / "bad.csv").write_text("row_id,given\n1,10\n")
    with pytest.raises(PipelineError, match="missing column suggested.*label_audit"):
        read_label_issues(tmp_path / "bad.csv")
    with pytest.raises(PipelineError, match="cannot read the label audit"):
        read_label_issues(tmp_path / "missing.csv")

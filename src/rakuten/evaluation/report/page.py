"""The whole report: the nine sections (:mod:`.sections`) in one offline HTML document."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from rakuten.evaluation.report.config import Explainer, ReportConfig, ReportInputs
from rakuten.evaluation.report.label_issues import label_issues_html
from rakuten.evaluation.report.markup import esc
from rakuten.evaluation.report.sections import (
    confusion_html,
    contact_sheets_html,
    gradcam_html,
    metrics_html,
    pairs_html,
    per_class_html,
)
from rakuten.evaluation.report.tables import gradcam_choice, predictions_on_test, require_columns
from rakuten.evaluation.report.trust import calibration_html, review_html

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1280px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}h3{font-size:1.05em}
table{border-collapse:collapse}th,td{padding:2px 6px}
table.metrics td,table.metrics th{border-bottom:1px solid #eee;text-align:right}
table.metrics :is(td,th):is(:first-child,:nth-child(2),:last-child){text-align:left}
tr.chosen{background:#fff3c4;font-weight:bold}
.warn{background:#fde8e8;border-left:4px solid #d62728;padding:.4em .8em}
.scroll{overflow-x:auto}
table.confusion{font-size:11px}table.confusion td{width:26px;height:20px;text-align:center;border:1px solid #f2f2f2}
table.confusion thead th{font-weight:normal;font-size:10px}
th.row{text-align:left;font-weight:normal;white-space:nowrap;max-width:16em;overflow:hidden;text-overflow:ellipsis}
td.total,td.support{color:#777;text-align:right}
.examples,.sheets{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0}figure.example,figure.cam{width:180px}figcaption{font-size:12px;color:#444}
.rid{color:#999}
table.perclass td.bars{min-width:360px}
.bar{position:relative;height:11px;margin:1px 0;background:#f4f4f4}
.bar i{display:block;height:100%}
.bar span{position:absolute;right:2px;top:-2px;font-size:10px;color:#333}
.legend .key{margin-right:1em;white-space:nowrap}.legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:middle}
nav a{margin-right:1em}
small.ci{color:#777;white-space:nowrap}
"""

SECTIONS = (
    ("metrics", "Scores of every model and fusion strategy"),
    ("calibration", "Calibration of the probabilities (test)"),
    ("review", "Human-review threshold (test)"),
    ("confusion", "Confusion matrix of the fused model (test)"),
    ("pairs", "Most confused class pairs (fused model, test)"),
    ("per-class", "Per-class F1 (test)"),
    ("gradcam", "Grad-CAM of the image model (test)"),
    ("cleaning", "Image cleaning contact sheets"),
    ("label-audit", "Label audit: likely mislabelled training rows"),
)


def page(bodies: Mapping[str, str]) -> str:
    """The whole document: inline CSS, a data-URI favicon (no request for /favicon.ico), one
    ``<section id=...>`` per entry of :data:`SECTIONS`."""
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in SECTIONS)
    parts = "".join(f'<section id="{key}"><h2>{esc(title)}</h2>{bodies[key]}</section>' for key, title in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,"><title>Rakuten product classification: error analysis</title>'
        f"<style>{CSS}</style></head><body><h1>Rakuten product classification: error analysis</h1>"
        f"<nav>{nav}</nav>{parts}</body></html>\n"
    )


def build_report(inputs: ReportInputs, cfg: ReportConfig, explainer: Explainer) -> str:
    """The report as one HTML string (the stage writes it atomically)."""
    require_columns(
        inputs.images, ("row_id", "clean_path", "readable"), "data/processed/image_quality.parquet", "image_clean"
    )
    clean_paths = dict(zip(inputs.images["row_id"].astype(int), inputs.images["clean_path"].astype(str)))
    readable = pd.Series(inputs.images["readable"].astype(bool).to_numpy(), index=inputs.images["row_id"].astype(int))
    titles = {int(k): ("" if pd.isna(v) else str(v)) for k, v in inputs.titles.items()}
    fused = predictions_on_test(inputs.fused)
    names = [*inputs.table.loc[inputs.table["kind"] == "model", "name"], "fusion"]
    right, wrong = gradcam_choice(predictions_on_test(inputs.image_probs), readable, cfg.gradcam_examples)
    bodies = {
        "metrics": metrics_html(
            inputs.table,
            inputs.chosen,
            inputs.data_source,
            inputs.n_rows,
            inputs.intervals,
            inputs.paired_gain,
            inputs.level,
        ),
        "calibration": calibration_html(
            inputs.calibration, inputs.reliability, inputs.calibration_method, inputs.level
        ),
        "review": review_html(inputs.review, inputs.risk_curve, inputs.level),
        "confusion": confusion_html(fused["actual"].tolist(), fused["predicted"].tolist()),
        "pairs": pairs_html(fused, titles, clean_paths, cfg),
        "per-class": per_class_html(inputs.per_class, [n for n in names if n in inputs.per_class]),
        "gradcam": gradcam_html(right, wrong, titles, clean_paths, explainer, cfg),
        "cleaning": contact_sheets_html(list(inputs.contact_sheets), cfg.jpeg_quality),
        "label-audit": label_issues_html(inputs.label_issues, inputs.label_audit, titles, clean_paths, cfg),
    }
    return page(bodies)

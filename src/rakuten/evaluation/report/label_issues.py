"""The report's label-audit section: the training rows most likely mislabelled, with their title and
photo, the label they were given and the one the cross-fitted text models suggest.

Why in the report: a flagged row is only useful once a person has looked at it; a page with the
product's picture and title beside both labels is what they need to decide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from rakuten.core.errors import PipelineError
from rakuten.evaluation.report.config import ReportConfig
from rakuten.evaluation.report.markup import class_name, esc, img_tag, jpeg_uri, short, thumbnail
from rakuten.evaluation.report.tables import require_columns

#: the label_audit stage's figures shown above the examples, in this order, with their wording
AUDIT_FIGURES = (
    ("rows_audited", "training rows audited"),
    ("flagged", "flagged as likely mislabelled"),
    ("precision", "precision against the planted noise"),
    ("recall", "recall against the planted noise"),
)


#: the label_audit stage's list of flagged rows and its columns
ISSUES = "reports/label_issues.csv"
ISSUE_COLUMNS = ("row_id", "given", "suggested", "score")


def read_label_issues(path: str | Path = ISSUES) -> pd.DataFrame:
    """The flagged rows, in the audit's order; a missing file or column is one line naming the stage."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PipelineError(f"{path}: cannot read the label audit ({exc}); rerun `dvc repro label_audit`") from None
    require_columns(frame, ISSUE_COLUMNS, str(path), "label_audit")
    return frame


def _figure(key: str, value) -> str:
    return f"{value:.3f}" if key in ("precision", "recall") and value is not None else esc(value)


def label_issues_html(
    issues: pd.DataFrame | None,
    audit: Mapping | None,
    titles: Mapping[int, str],
    clean_paths: Mapping[int, str],
    cfg: ReportConfig,
) -> str:
    """The audit's figures and its ``report.label_issues`` most suspicious flagged rows (lowest label
    quality first), each with its cleaned photo, title, given and suggested class."""
    if issues is None or audit is None:
        return "<p>No label audit (run <code>dvc repro label_audit</code>).</p>"
    audit = {**audit, **audit.get("ground_truth", {})}  # precision / recall: sample source only
    figures = "".join(
        f"<tr><td>{esc(label)}</td><td>{_figure(key, audit.get(key))}</td></tr>"
        for key, label in AUDIT_FIGURES
        if audit.get(key) is not None
    )
    cards = []
    for row in issues.head(cfg.label_issues).itertuples(index=False):
        rid = int(row.row_id)
        title = str(titles.get(rid, ""))
        picture = ""
        if rid in clean_paths:
            thumb = thumbnail(clean_paths[rid], cfg.thumbnail)
            picture = img_tag(jpeg_uri(thumb, cfg.jpeg_quality), thumb, title)
        cards.append(
            f'<figure class="example">{picture}<figcaption title="{esc(title)}"><span class="rid">#{rid}</span> '
            f"{esc(short(title, 80))}<br>given <b>{esc(class_name(int(row.given)))}</b><br>suggested "
            f"<b>{esc(class_name(int(row.suggested)))}</b><br>label quality {float(row.score):.3f}"
            "</figcaption></figure>"
        )
    shown = "".join(cards) or "<p>No training row flagged.</p>"
    return (
        "<p>Training rows whose given label the cheap text and image models, cross-fitted (never scored by a "
        "model trained on the row), find unlikely (confident learning, cleanlab); the full list is "
        f"<code>reports/label_issues.csv</code>. <code>label_audit.label_noise = drop</code> trains the models "
        "without them.</p>"
        f'<table class="metrics"><tbody>{figures}</tbody></table><div class="examples">{shown}</div>'
    )

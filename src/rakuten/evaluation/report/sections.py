"""The report's sections, one pure function each: tables and pictures in, an HTML fragment out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from rakuten.contracts.classes import CLASS_CODES, codes_to_indices
from rakuten.core.errors import PipelineError
from rakuten.evaluation.bootstrap import PairedDifference
from rakuten.evaluation.evaluate import confusion_table, study_reference
from rakuten.evaluation.report.config import Explainer, ReportConfig
from rakuten.evaluation.report.markup import class_name, esc, fmt, img_tag, jpeg_uri, open_rgb, short, thumbnail
from rakuten.evaluation.report.tables import pair_examples, top_confused_pairs
from rakuten.evaluation.uncertainty import interval_of

log = logging.getLogger(__name__)

#: bar colours of the per-class F1 chart, one per model in the order given (cycled beyond)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _score_cell(value, intervals: pd.DataFrame | None, name: str, split: str, score: str) -> str:
    """A score, with its bootstrap interval below it in small type when one was computed."""
    iv = None if intervals is None else interval_of(intervals, name, split, score)
    if iv is None:
        return fmt(value)
    return f'{fmt(value)}<br><small class="ci">[{fmt(iv[0])}, {fmt(iv[1])}]</small>'


def metrics_html(
    table: pd.DataFrame,
    chosen: str,
    data_source: str,
    n_rows: Mapping[str, int],
    intervals: pd.DataFrame | None = None,
    paired_gain: tuple[str, PairedDifference] | None = None,
    level: float = 0.95,
) -> str:
    """Every model and fusion strategy: val/test scores (with bootstrap intervals when given) beside the
    study's weighted F1; the chosen fusion's row highlighted, and its paired gain over the best single
    model. On the sample catalog the figures are flagged as not comparable."""
    if data_source == "sample":
        data = (
            '<p class="warn">Data: the <b>synthetic sample catalog</b> (data.source = sample): these figures '
            "check the pipeline, they are <b>not comparable</b> with the study's.</p>"
        )
    else:
        data = "<p>Data: the <b>real challenge files</b> (data.source = raw).</p>"
    rows = ", ".join(f"{esc(k)} {int(v)}" for k, v in sorted(n_rows.items()))
    head = (
        "<tr><th>model / strategy</th><th>kind</th><th>val weighted F1</th><th>test weighted F1</th>"
        "<th>test macro F1</th><th>test accuracy</th><th>study weighted F1</th><th>study setting</th></tr>"
    )
    body = []
    for r in table.itertuples(index=False):
        study, note = study_reference(r.name)
        note = f"the chosen strategy ({chosen})" if r.name == "fusion" else note
        mark = ' class="chosen"' if r.name == f"fusion_{chosen}" else ""
        cells = "".join(
            f"<td>{_score_cell(getattr(r, f'{split}_{score}'), intervals, r.name, split, score)}</td>"
            for split, score in (
                ("val", "weighted_f1"),
                ("test", "weighted_f1"),
                ("test", "macro_f1"),
                ("test", "accuracy"),
            )
        )
        body.append(
            f"<tr{mark}><td>{esc(r.name)}</td><td>{esc(r.kind)}</td>{cells}<td>{fmt(study)}</td><td>{esc(note)}</td></tr>"
        )
    gain = ""
    if paired_gain is not None:
        best, d = paired_gain
        gain = (
            f'<p id="fusion-gain">Paired bootstrap (the same resampled test rows for both): the fused model minus '
            f"the best single model ({esc(best)}) = <b>{d.value:+.4f}</b> test weighted F1, {level:.0%} interval "
            f"[{d.low:+.4f}, {d.high:+.4f}]; the fusion wins in {d.share_a_wins:.1%} of the resamples.</p>"
        )
    ci = f" Small type: {level:.0%} bootstrap interval (rows resampled)." if intervals is not None else ""
    return (
        f"{data}<p>Rows: {rows}. Chosen fusion (best out-of-fold validation weighted F1): "
        f"<b>{esc(chosen)}</b>, highlighted; <code>fusion</code> is its prediction table.{ci}</p>"
        f'<table class="metrics"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>{gain}'
    )


def confusion_html(actual: Sequence[int], predicted: Sequence[int]) -> str:
    """The 27 x 27 confusion matrix: counts as text, shading by the row's share (blue on the diagonal,
    red off it), codes and French labels in the tooltips."""
    cm = confusion_table(np.asarray(actual), np.asarray(predicted)).to_numpy()
    totals = cm.sum(axis=1)
    head = "".join(f'<th title="{esc(class_name(c))}">{c}</th>' for c in CLASS_CODES)
    rows = []
    for i, a in enumerate(CLASS_CODES):
        cells = []
        for j, p in enumerate(CLASS_CODES):
            n = int(cm[i, j])
            share = n / totals[i] if totals[i] else 0.0
            rgb = "31,119,180" if i == j else "214,39,40"
            ink = "#fff" if share > 0.55 else "#000"
            tip = f"actual {class_name(a)} → predicted {class_name(p)}: {n} ({share:.1%} of the row)"
            cells.append(
                f'<td style="background:rgba({rgb},{share:.3f});color:{ink}" title="{esc(tip)}">{n if n else ""}</td>'
            )
        rows.append(
            f'<tr><th class="row" title="{esc(class_name(a))}">{esc(short(class_name(a), 28))}</th>'
            f'{"".join(cells)}<td class="total">{int(totals[i])}</td></tr>'
        )
    return (
        "<p>Rows: actual class, columns: predicted class; shading = share of the row "
        "(blue: correct, red: confused); hover a cell for the codes and labels.</p>"
        f'<div class="scroll"><table id="confusion-matrix" class="confusion"><thead><tr><th>actual \\ predicted</th>'
        f"{head}<th>n</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def pairs_html(
    preds: pd.DataFrame, titles: Mapping[int, str], clean_paths: Mapping[int, str], cfg: ReportConfig
) -> str:
    """The fused model's most confused pairs on test, each with example products (thumbnail, title)."""
    pairs = top_confused_pairs(preds["actual"], preds["predicted"], cfg.top_pairs)
    if not pairs:
        return "<p>No confused pair to show (no off-diagonal test prediction, or report.top_pairs = 0).</p>"
    out = []
    for actual, predicted, count in pairs:
        figures = []
        for row in pair_examples(preds, actual, predicted, cfg.examples_per_pair).itertuples(index=False):
            rid = int(row.row_id)
            title = str(titles.get(rid, ""))
            thumb = thumbnail(clean_paths[rid], cfg.thumbnail)
            figures.append(
                f'<figure class="example">{img_tag(jpeg_uri(thumb, cfg.jpeg_quality), thumb, title)}'
                f'<figcaption title="{esc(title)}"><span class="rid">#{rid}</span> {esc(short(title))}'
                "</figcaption></figure>"
            )
        out.append(
            f'<section class="pair"><h3>{esc(class_name(actual))} → {esc(class_name(predicted))}: '
            f"{count} test product{'s' if count != 1 else ''}</h3>"
            f'<div class="examples">{"".join(figures)}</div></section>'
        )
    return (
        "<p>Actual → predicted, by number of test products; examples are the first by row_id "
        f"(cleaned image, title).</p>{''.join(out)}"
    )


def per_class_html(per_class: Mapping[str, pd.DataFrame], names: Sequence[str]) -> str:
    """Per-class test F1 of each of ``names`` as horizontal CSS bars, one row per class."""
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    legend = "".join(f'<span class="key"><i style="background:{colours[n]}"></i>{esc(n)}</span>' for n in names)
    f1 = {
        name: dict(zip(per_class[name]["prdtypecode"].astype(int), per_class[name]["f1"].astype(float)))
        for name in names
    }
    support = (
        dict(zip(per_class[names[0]]["prdtypecode"].astype(int), per_class[names[0]]["support"].astype(int)))
        if names
        else {}
    )
    rows = []
    for code in CLASS_CODES:
        bars = "".join(
            f'<div class="bar" title="{esc(name)}: F1 {f1[name].get(code, 0.0):.3f}">'
            f'<i style="width:{100 * f1[name].get(code, 0.0):.1f}%;background:{colours[name]}"></i>'
            f"<span>{f1[name].get(code, 0.0):.3f}</span></div>"
            for name in names
        )
        rows.append(
            f'<tr><th class="row" title="{esc(class_name(code))}">{esc(short(class_name(code), 40))}</th>'
            f'<td class="support">{support.get(code, 0)}</td><td class="bars">{bars}</td></tr>'
        )
    return (
        f'<p class="legend">{legend}</p><table class="perclass"><thead><tr><th>class</th><th>test n</th>'
        f"<th>F1 per model</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def gradcam_html(
    right: pd.DataFrame,
    wrong: pd.DataFrame,
    titles: Mapping[int, str],
    clean_paths: Mapping[int, str],
    explainer: Explainer,
    cfg: ReportConfig,
) -> str:
    """Grad-CAM overlays for the predicted class of the image model; a :class:`PipelineError` (e.g. an
    architecture Grad-CAM does not support, or no usable model) becomes the section's one line."""
    if cfg.gradcam_examples == 0:
        return "<p>Grad-CAM examples are off (report.gradcam_examples = 0).</p>"
    groups = []
    try:
        for label, frame in (("Correctly classified", right), ("Wrongly classified", wrong)):
            figures = []
            for row in frame.itertuples(index=False):
                rid = int(row.row_id)
                overlay = explainer(clean_paths[rid], int(codes_to_indices([row.predicted])[0]), cfg.gradcam_size)
                title = str(titles.get(rid, ""))
                caption = (
                    f"#{rid} actual {class_name(row.actual)}, predicted {class_name(row.predicted)} "
                    f"(p = {row.confidence:.2f})"
                )
                figures.append(
                    f'<figure class="cam">{img_tag(jpeg_uri(overlay, cfg.jpeg_quality), overlay, caption)}'
                    f'<figcaption title="{esc(title)}">{esc(caption)}<br>{esc(short(title, 80))}'
                    "</figcaption></figure>"
                )
            body = "".join(figures) or "<p>None among the test products.</p>"
            groups.append(f'<h3>{label}</h3><div class="examples">{body}</div>')
    except PipelineError as exc:
        log.warning("report: no Grad-CAM section: %s", exc)
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f'<p class="warn">Grad-CAM unavailable: {esc(first)}</p>'
    return (
        "<p>Where the image model looked for its predicted class (Grad-CAM on the cleaned image; "
        f"first test products by row_id).</p>{''.join(groups)}"
    )


def contact_sheets_html(paths: Sequence[Path], quality: int) -> str:
    """The image_clean stage's before/after contact sheets, re-encoded as JPEG (PNG photos are ~5x larger)."""
    if not paths:
        return "<p>No contact sheet in reports/figures/image_clean/.</p>"
    out = []
    for path in paths:
        sheet = open_rgb(path)
        name = Path(path).stem.replace("_", " ")
        out.append(
            f'<figure class="sheet">{img_tag(jpeg_uri(sheet, quality), sheet, name)}'
            f"<figcaption>{esc(name)}</figcaption></figure>"
        )
    return (
        "<p>Before / after examples of each defect the image_clean stage detects and corrects "
        f'(reports/figures/image_clean/).</p><div class="sheets">{"".join(out)}</div>'
    )

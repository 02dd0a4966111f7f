"""The error-analysis report ``reports/report.html``, written by the evaluate stage.

Why one self-contained file: it is mailed, attached to a pull request or opened on a laptop
without the repository or a network, so every image is an inline ``data:`` URI, the CSS is
inline, nothing is fetched and no script runs. Why deterministic bytes: the file is a DVC output,
so the same inputs must give the same file (no timestamps, no temporary paths, stable ordering,
fixed number formats, images re-encoded from their pixels only).

Sections (each built by one pure function below from tables the stage already has):

1. metrics: every model and fusion strategy beside the study's figure (:mod:`rakuten.evaluation.evaluate`);
2. the fused model's 27 x 27 confusion matrix on test, row-normalised shading, counts as text;
3. its most confused class pairs with example products (thumbnail of the cleaned image, title);
4. per-class F1 bars of every model and of the fused model;
5. Grad-CAM overlays of the image model on the first correct and first wrong test products;
6. the image_clean stage's contact sheets.

Everything that comes from data (titles, labels, names) goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS, PROBA_COLUMNS, codes_to_indices, indices_to_codes
from rakuten.core.config import knob
from rakuten.core.errors import PipelineError
from rakuten.evaluation.evaluate import STUDY_NOTES, STUDY_WEIGHTED_F1, confusion_table

log = logging.getLogger(__name__)

#: the image model the report explains (models/<name>, reports/probs/<name>.parquet; dvc.yaml deps)
IMAGE_MODEL = "resnet50"
#: overlay of the image model's Grad-CAM: (cleaned image path, class index, side in px) -> picture
Explainer = Callable[[str, int, int], Image.Image]

#: bar colours of the per-class F1 chart, one per model in the order given (cycled beyond)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
TITLE_CHARS = 140  # longer product titles are cut in captions (the full title stays in the tooltip)


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
    image_probs: pd.DataFrame  # reports/probs/resnet50.parquet
    titles: pd.Series  # designation by row_id (data/interim/catalog.parquet)
    images: pd.DataFrame  # row_id, clean_path, readable (data/processed/image_quality.parquet)
    contact_sheets: Sequence[Path] = ()  # reports/figures/image_clean/*.png, sorted


# ------------------------------------------------------------------------------------------ helpers


def esc(value: object) -> str:
    """HTML-escaped text of ``value`` (quotes too: the result may sit in an attribute)."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A score with 4 decimals, or an em dash for a missing one (fixed format: stable bytes)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{float(value):.4f}"


def class_name(code: int) -> str:
    """``2583 Autour de la piscine``: the code with its French label."""
    return f"{code} {CLASS_LABELS[int(code)]}"


def jpeg_uri(image: Image.Image, quality: int) -> str:
    """``image`` as a baseline JPEG ``data:`` URI. Re-built from its pixels first, so no EXIF, ICC profile
    or timestamp of the source is carried: the bytes depend on the pixels and the quality only
    (as :func:`rakuten.evaluation.gradcam.data_uri`, which has no quality setting)."""
    rgb = image.convert("RGB")
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def open_rgb(path: str | Path) -> Image.Image:
    """The picture at ``path`` in RGB; a missing or broken file is one line naming it and the stage
    that writes it (every picture the report shows is an image_clean output)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot read the image ({exc}); rerun `dvc repro image_clean`") from None


def thumbnail(path: str | Path, side: int) -> Image.Image:
    """The picture at ``path`` shrunk so that its longest side is at most ``side`` (never enlarged)."""
    img = open_rgb(path)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


def img_tag(uri: str, image: Image.Image, alt: str, css: str = "") -> str:
    """An ``<img>`` with its intrinsic size (no layout shift) and escaped ``alt``."""
    klass = f' class="{css}"' if css else ""
    return f'<img{klass} src="{uri}" width="{image.width}" height="{image.height}" alt="{esc(alt)}">'


def short(text: str, limit: int = TITLE_CHARS) -> str:
    """``text`` cut at ``limit`` characters with an ellipsis (cut before escaping: no broken entity)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ------------------------------------------------------------------------------------------ tables


def require_columns(frame: pd.DataFrame, columns: Sequence[str], path: str, stage: str) -> None:
    """One line naming the file, the first missing column and the stage that writes it (not a KeyError)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"{path}: missing column {missing[0]}; expected {', '.join(columns)} (rerun `dvc repro {stage}`)"
        )


def titles_by_row(catalog: pd.DataFrame) -> pd.Series:
    """Product titles (``designation``) by ``row_id`` from ``data/interim/catalog.parquet``."""
    require_columns(catalog, ("row_id", "designation"), "data/interim/catalog.parquet", "ingest")
    return catalog.set_index("row_id")["designation"]


def predictions_on_test(probs: pd.DataFrame) -> pd.DataFrame:
    """``row_id, actual, predicted, confidence`` of the test rows of a probability table, by row_id.
    Predicted = argmax of the probabilities (as :func:`rakuten.evaluation.evaluate.labelled_predictions`)."""
    test = probs[probs["split"].astype(str) == "test"].sort_values("row_id", kind="stable")
    p = test[list(PROBA_COLUMNS)].to_numpy()
    best = p.argmax(axis=1)
    return pd.DataFrame(
        {
            "row_id": test["row_id"].to_numpy(dtype=np.int64),
            "actual": test["prdtypecode"].to_numpy(dtype=np.int64),
            "predicted": indices_to_codes(best),
            "confidence": p[np.arange(len(p)), best],
        }
    )


def top_confused_pairs(actual: Iterable[int], predicted: Iterable[int], n: int) -> list[tuple[int, int, int]]:
    """The ``n`` most frequent off-diagonal ``(actual, predicted, count)``: count descending, then
    actual and predicted code ascending, so ties always rank the same way."""
    cm = confusion_table(np.asarray(list(actual)), np.asarray(list(predicted)))
    pairs = [
        (int(a), int(p), int(cm.loc[a, p])) for a in CLASS_CODES for p in CLASS_CODES if a != p and cm.loc[a, p] > 0
    ]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))[:n]


def pair_examples(preds: pd.DataFrame, actual: int, predicted: int, m: int) -> pd.DataFrame:
    """The first ``m`` rows (by row_id) of ``preds`` classified ``actual`` -> ``predicted``."""
    hit = preds[(preds["actual"] == actual) & (preds["predicted"] == predicted)]
    return hit.sort_values("row_id", kind="stable").head(m)


def gradcam_choice(image_preds: pd.DataFrame, readable: pd.Series, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``k`` correctly and the first ``k`` wrongly classified test rows (by row_id) of the image
    model whose source image was readable: an unreadable one is a grey placeholder, nothing to explain."""
    ok = image_preds[image_preds["row_id"].map(readable).fillna(False).astype(bool)].sort_values(
        "row_id", kind="stable"
    )
    right = ok["actual"] == ok["predicted"]
    return ok[right].head(k), ok[~right].head(k)


# ------------------------------------------------------------------------------------------ sections


def metrics_html(table: pd.DataFrame, chosen: str, data_source: str, n_rows: Mapping[str, int]) -> str:
    """Every model and fusion strategy: val/test scores beside the study's weighted F1; the chosen
    fusion's row highlighted. On the sample catalog the figures are flagged as not comparable."""
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
        study, note = STUDY_WEIGHTED_F1.get(r.name, (None, STUDY_NOTES.get(r.name, "")))
        note = f"the chosen strategy ({chosen})" if r.name == "fusion" else note
        mark = ' class="chosen"' if r.name == f"fusion_{chosen}" else ""
        body.append(
            f"<tr{mark}><td>{esc(r.name)}</td><td>{esc(r.kind)}</td><td>{fmt(r.val_weighted_f1)}</td>"
            f"<td>{fmt(r.test_weighted_f1)}</td><td>{fmt(r.test_macro_f1)}</td><td>{fmt(r.test_accuracy)}"
            f"</td><td>{fmt(study)}</td><td>{esc(note)}</td></tr>"
        )
    return (
        f"{data}<p>Rows: {rows}. Chosen fusion (best out-of-fold validation weighted F1): "
        f"<b>{esc(chosen)}</b>, highlighted; <code>fusion</code> is its prediction table.</p>"
        f'<table class="metrics"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
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


# ------------------------------------------------------------------------------------------ the page

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
"""

SECTIONS = (
    ("metrics", "Scores of every model and fusion strategy"),
    ("confusion", "Confusion matrix of the fused model (test)"),
    ("pairs", "Most confused class pairs (fused model, test)"),
    ("per-class", "Per-class F1 (test)"),
    ("gradcam", "Grad-CAM of the image model (test)"),
    ("cleaning", "Image cleaning contact sheets"),
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
        "metrics": metrics_html(inputs.table, inputs.chosen, inputs.data_source, inputs.n_rows),
        "confusion": confusion_html(fused["actual"].tolist(), fused["predicted"].tolist()),
        "pairs": pairs_html(fused, titles, clean_paths, cfg),
        "per-class": per_class_html(inputs.per_class, [n for n in names if n in inputs.per_class]),
        "gradcam": gradcam_html(right, wrong, titles, clean_paths, explainer, cfg),
        "cleaning": contact_sheets_html(list(inputs.contact_sheets), cfg.jpeg_quality),
    }
    return page(bodies)


def image_model_explainer(model_dir: str | Path) -> Explainer:
    """Grad-CAM overlays of the trained image model at ``model_dir``, loaded on the first call only, so a
    report with ``gradcam_examples = 0`` never loads torch weights; load errors surface in that call. The
    folder is checked against the project's dvc.lock first (:mod:`rakuten.core.integrity`)."""

    @functools.lru_cache(maxsize=1)
    def model():
        from rakuten.core.integrity import verified
        from rakuten.models import resnet50

        return resnet50.load(verified(model_dir))

    def explain(image_path: str, class_index: int, size: int) -> Image.Image:
        from rakuten.evaluation import gradcam as cam

        heat = cam.gradcam(model(), image_path, class_index)
        return cam.overlay(image_path, heat, size=size)

    return explain

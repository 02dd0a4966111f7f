"""The error-analysis report (the package rakuten.evaluation.report): its pieces on small hand-made inputs, the
effect of each ``report`` knob, and the report the real pipeline writes, opened in headless Chromium.

The unit tests use a fake explainer (a plain coloured square), so they need neither torch nor a
trained model; the browser test reads ``reports/report.html`` of the tiny project built by `dvc repro`
(the session fixture ``tiny_built_repo``), so the real Grad-CAM and the stage wiring are covered too.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from rakuten.contracts.classes import CLASS_CODES, PROBA_COLUMNS
from rakuten.core.errors import PipelineError
from rakuten.evaluation import evaluate as E
from rakuten.evaluation.report.config import ReportConfig, ReportInputs
from rakuten.evaluation.report.image_model import IMAGE_MODEL
from rakuten.evaluation.report.page import SECTIONS, build_report
from rakuten.evaluation.report.sections import confusion_html, metrics_html
from rakuten.evaluation.report.tables import (
    gradcam_choice,
    pair_examples,
    predictions_on_test,
    titles_by_row,
    top_confused_pairs,
)
from tests.helpers.browser import chromium_page
from tests.helpers.stagerun import REPO

CFG = ReportConfig()
#: hand-made confusions of the fused model: (actual, predicted) -> how many test rows
CONFUSIONS = {(10, 40): 3, (50, 60): 2, (1140, 1160): 2, (2583, 1560): 1}
EVIL = '<script>alert("x")</script> & <b>bold</b>'


def _probs(row_ids, actual, predicted, split="test") -> pd.DataFrame:
    """A probability table whose argmax is ``predicted`` (0.9 there, the rest spread evenly)."""
    index = {c: i for i, c in enumerate(CLASS_CODES)}
    p = np.full((len(row_ids), len(CLASS_CODES)), 0.1 / (len(CLASS_CODES) - 1))
    p[np.arange(len(row_ids)), [index[c] for c in predicted]] = 0.9
    frame = pd.DataFrame(p, columns=list(PROBA_COLUMNS))
    frame.insert(0, "prdtypecode", np.asarray(actual, dtype=np.int64))
    frame.insert(0, "split", split)
    frame.insert(0, "row_id", np.asarray(row_ids, dtype=np.int64))
    return frame


def _rows() -> tuple[list[int], list[int], list[int]]:
    """81 test rows (3 per class), all correct except the :data:`CONFUSIONS`, in row_id order."""
    actual = [CLASS_CODES[i % len(CLASS_CODES)] for i in range(3 * len(CLASS_CODES))]
    predicted = list(actual)
    for (a, p), n in CONFUSIONS.items():
        for i in [i for i, c in enumerate(actual) if c == a][:n]:
            predicted[i] = p
    return list(range(len(actual))), actual, predicted


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> ReportInputs:
    root = tmp_path_factory.mktemp("report")
    ids, actual, predicted = _rows()
    (root / "images").mkdir()
    paths = []
    for rid in ids:
        path = root / "images" / f"{rid}.jpg"
        Image.new("RGB", (32, 32), ((rid * 37) % 256, (rid * 91) % 256, 120)).save(path, quality=95)
        paths.append(str(path))
    sheet = root / "blur.png"
    Image.new("RGB", (40, 80), (200, 30, 30)).save(sheet)
    fused = _probs(ids, actual, predicted)
    # the image model: wrong on every third row, right elsewhere
    image_pred = [CLASS_CODES[(CLASS_CODES.index(a) + 1) % 27] if i % 3 == 0 else a for i, a in enumerate(actual)]
    image = _probs(ids, actual, image_pred)
    preds = pd.concat(
        [
            pd.DataFrame({"name": name, "kind": kind, "split": "test", "actual": actual, "predicted": pred})
            for name, kind, pred in (
                ("resnet50", "model", image_pred),
                ("fusion", "fusion", predicted),
                ("fusion_max_rule", "fusion", predicted),
            )
        ],
        ignore_index=True,
    )
    table, per_class, _ = E.evaluate_predictions(preds)
    titles = pd.Series([EVIL if rid == 0 else f"Produit numéro {rid}" for rid in ids], index=ids)
    images = pd.DataFrame({"row_id": ids, "clean_path": paths, "readable": [rid != 6 for rid in ids]})
    return ReportInputs(
        table=table,
        per_class=per_class,
        chosen="max_rule",
        data_source="sample",
        n_rows={"test": len(ids)},
        fused=fused,
        image_probs=image,
        titles=titles,
        images=images,
        contact_sheets=[sheet],
    )


class FakeExplainer:
    """A square of the requested size; remembers each call ``(image path, class index, size)``."""

    def __init__(self, error: str | None = None):
        self.calls: list[tuple[str, int, int]] = []
        self.error = error

    def __call__(self, path: str, class_index: int, size: int) -> Image.Image:
        if self.error:
            raise PipelineError(self.error)
        self.calls.append((path, class_index, size))
        return Image.new("RGB", (size, size), (255, 0, 0))


def build(inputs: ReportInputs, **changes) -> tuple[str, FakeExplainer]:
    explainer = FakeExplainer()
    return build_report(inputs, replace(CFG, **changes), explainer), explainer


def section(html: str, key: str) -> str:
    return html.split(f'<section id="{key}">', 1)[1].split('</section><section id="', 1)[0]


def images_in(html: str) -> list[tuple[bytes, int, int]]:
    """``(decoded bytes, width, height attributes)`` of every data-URI ``<img>``."""
    return [
        (base64.b64decode(b64), int(w), int(h))
        for b64, w, h in re.findall(r'src="data:image/[a-z]+;base64,([^"]+)" width="(\d+)" height="(\d+)"', html)
    ]


# ------------------------------------------------------------------------------------------ pieces


def test_top_confused_pairs_rank_by_count_then_codes_and_skip_the_diagonal():
    actual = [10, 10, 10, 50, 50, 1140, 1140, 40, 40]
    predicted = [40, 40, 10, 60, 60, 1160, 1160, 40, 10]
    assert top_confused_pairs(actual, predicted, 10) == [(10, 40, 2), (50, 60, 2), (1140, 1160, 2), (40, 10, 1)]
    assert top_confused_pairs(actual, predicted, 2) == [(10, 40, 2), (50, 60, 2)]
    assert top_confused_pairs([10, 40], [10, 40], 5) == []


def test_pair_examples_are_the_first_rows_by_row_id():
    preds = pd.DataFrame({"row_id": [9, 3, 5, 1], "actual": [10, 10, 10, 40], "predicted": [40, 40, 40, 40]})
    assert pair_examples(preds, 10, 40, 2)["row_id"].tolist() == [3, 5]


def test_predictions_on_test_use_the_argmax_of_test_rows_only():
    table = pd.concat([_probs([5, 2], [10, 40], [40, 40]), _probs([7], [10], [10], split="val")])
    out = predictions_on_test(table)
    assert out["row_id"].tolist() == [2, 5] and out["predicted"].tolist() == [40, 40]
    assert out["confidence"].tolist() == pytest.approx([0.9, 0.9])


def test_gradcam_choice_skips_unreadable_images():
    preds = pd.DataFrame(
        {"row_id": [1, 2, 3, 4], "actual": [10, 10, 10, 10], "predicted": [10, 40, 10, 40], "confidence": 0.5}
    )
    right, wrong = gradcam_choice(preds, pd.Series([False, True, True, True], index=[1, 2, 3, 4]), 5)
    assert right["row_id"].tolist() == [3] and wrong["row_id"].tolist() == [2, 4]


def test_titles_and_labels_are_escaped(inputs):
    html, _ = build(inputs)
    assert "<script" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "Jeu d&#x27;extérieur" in html  # a French label with an apostrophe, in an attribute-safe form


def test_metrics_flag_the_sample_catalog_and_highlight_the_chosen_fusion(inputs):
    html = metrics_html(inputs.table, "max_rule", "sample", {"test": 81})
    assert "not comparable" in html and "synthetic sample catalog" in html
    assert re.search(r'<tr class="chosen"><td>fusion_max_rule</td>', html)
    assert html.count('class="chosen"') == 1
    assert "0.8899" in html  # the study's figure for the max rule, beside it
    raw = metrics_html(inputs.table, "max_rule", "raw", {"test": 81})
    assert "not comparable" not in raw and "real challenge files" in raw


def test_confusion_matrix_is_27_by_27_with_codes_and_labels(inputs):
    ids, actual, predicted = _rows()
    html = confusion_html(actual, predicted)
    body = html.split("<tbody>", 1)[1]
    assert body.count("<tr>") == 27
    assert len(re.findall(r"<td style=", body)) == 27 * 27
    assert 'title="actual 10 Livre occasion → predicted 40 Jeu vidéo, accessoire tech: 3 (100.0% of the row)"' in html


def test_the_report_has_every_section_and_only_inline_resources(inputs):
    html, explainer = build(inputs)
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in html
    assert not re.search(r'(src|href)="(?!data:|#)', html), "every resource inline, every link in-page"
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # 4 pairs (all confusions), gradcam: 4 right + 4 wrong, one contact sheet
    assert section(html, "pairs").count('<section class="pair">') == len(CONFUSIONS)
    assert len(explainer.calls) == 2 * CFG.gradcam_examples
    assert len(images_in(section(html, "cleaning"))) == 1
    assert str(inputs.contact_sheets[0].parent) not in html  # no local path leaks into the file


def test_same_inputs_give_the_same_bytes(inputs):
    first, _ = build(inputs)
    assert build(inputs)[0] == first


def test_gradcam_explains_the_predicted_class_of_readable_rows(inputs):
    html, explainer = build(inputs, gradcam_examples=4)  # wrong rows 0, 3, 6, 9...: 6 must be skipped
    index = {c: i for i, c in enumerate(CLASS_CODES)}
    image = predictions_on_test(inputs.image_probs).set_index("row_id")
    for path, class_index, _ in explainer.calls:
        rid = int(Path(path).stem)
        assert class_index == index[image.loc[rid, "predicted"]]
    rows = [int(Path(path).stem) for path, *_ in explainer.calls]
    assert rows == [1, 2, 4, 5, 0, 3, 9, 12]  # first right, then first wrong by row_id; 6 is unreadable
    assert "Correctly classified" in html and "Wrongly classified" in html


def test_a_gradcam_error_is_one_line_in_its_section(inputs):
    html = build_report(inputs, CFG, FakeExplainer(error="Grad-CAM is not supported for arch vit_tiny"))
    body = section(html, "gradcam")
    assert "Grad-CAM unavailable: Grad-CAM is not supported for arch vit_tiny" in body
    assert "<img" not in body
    assert section(html, "cleaning").count("<img") == 1  # the rest of the report is still there


def test_a_missing_cleaned_image_names_the_file(inputs, tmp_path):
    images = inputs.images.assign(clean_path=str(tmp_path / "gone.jpg"))
    with pytest.raises(PipelineError, match="gone.jpg: cannot read the image"):
        build_report(replace(inputs, images=images), CFG, FakeExplainer())


def test_missing_columns_are_one_line_naming_the_file_and_stage(inputs):
    with pytest.raises(PipelineError, match=r"catalog.parquet: missing column designation; .*dvc repro ingest"):
        titles_by_row(pd.DataFrame({"row_id": [1]}))
    with pytest.raises(PipelineError, match=r"image_quality.parquet: missing column clean_path; .*image_clean"):
        build_report(replace(inputs, images=inputs.images.drop(columns="clean_path")), CFG, FakeExplainer())
    assert titles_by_row(pd.DataFrame({"row_id": [4], "designation": ["x"]})).to_dict() == {4: "x"}


# ------------------------------------------------------------------------------------------ knobs


@pytest.mark.param_effect("report.top_pairs")
def test_top_pairs_sets_how_many_pairs_are_shown(inputs):
    counts = {n: section(build(inputs, top_pairs=n)[0], "pairs").count('<section class="pair">') for n in (0, 1, 3)}
    assert counts == {0: 0, 1: 1, 3: 3}
    first = section(build(inputs, top_pairs=1)[0], "pairs")
    assert "10 Livre occasion → 40 Jeu vidéo, accessoire tech: 3 test products" in first


@pytest.mark.param_effect("report.examples_per_pair")
def test_examples_per_pair_sets_the_examples_of_each_pair(inputs):
    def examples(n):
        pairs = section(build(inputs, examples_per_pair=n)[0], "pairs").split('<section class="pair">')[1:]
        return [p.count('<figure class="example">') for p in pairs]

    assert examples(1) == [1, 1, 1, 1]
    assert examples(3) == [3, 2, 2, 1]  # capped by how many products each pair has


@pytest.mark.param_effect("report.gradcam_examples")
def test_gradcam_examples_sets_how_many_overlays(inputs):
    html, explainer = build(inputs, gradcam_examples=0)
    assert explainer.calls == [] and "report.gradcam_examples = 0" in html
    html, explainer = build(inputs, gradcam_examples=3)
    assert len(explainer.calls) == 6 and section(html, "gradcam").count('<figure class="cam">') == 6


@pytest.mark.param_effect("report.thumbnail")
def test_thumbnail_sets_the_size_of_the_examples(inputs):
    sizes = {
        side: {(w, h) for _, w, h in images_in(section(build(inputs, thumbnail=side)[0], "pairs"))} for side in (16, 24)
    }
    assert sizes == {16: {(16, 16)}, 24: {(24, 24)}}
    data, w, h = images_in(section(build(inputs, thumbnail=24)[0], "pairs"))[0]
    assert Image.open(io.BytesIO(data)).size == (w, h)


@pytest.mark.param_effect("report.gradcam_size")
def test_gradcam_size_sets_the_size_of_the_overlays(inputs):
    html, explainer = build(inputs, gradcam_size=40)
    assert {size for *_, size in explainer.calls} == {40}
    assert {(w, h) for _, w, h in images_in(section(html, "gradcam"))} == {(40, 40)}


@pytest.mark.param_effect("report.jpeg_quality")
def test_jpeg_quality_trades_detail_for_size(inputs):
    def sheet_bytes(quality):
        return images_in(section(build(inputs, jpeg_quality=quality)[0], "cleaning"))[0][0]

    low, high = sheet_bytes(10), sheet_bytes(95)
    assert len(low) < len(high)
    assert Image.open(io.BytesIO(low)).format == "JPEG"


# ------------------------------------------------------------------------------------------ wiring


def test_the_evaluate_stage_declares_the_report():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]
    outs = {next(iter(o)) if isinstance(o, dict) else o: o for o in stage["outs"]}
    assert outs["reports/report.html"] == {"reports/report.html": {"cache": False}}
    assert "report" in stage["params"]
    assert {
        "data/interim/catalog.parquet",
        "data/processed/image_quality.parquet",
        "data/processed/images",
        f"models/{IMAGE_MODEL}",
        "reports/figures/image_clean",
    } <= set(stage["deps"])


@pytest.mark.slow
def test_the_pipeline_report_opens_clean_in_chromium(tiny_built_repo):
    """The report `dvc repro` wrote: loads offline without errors or requests, every picture decodes."""
    path = tiny_built_repo / "reports/report.html"
    assert path.is_file(), "the evaluate stage wrote no reports/report.html"
    with chromium_page(offline=True) as (page, seen):
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        assert seen.problems == []
        assert seen.requests == [path.as_uri()], "the file fetched something besides itself"
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
        assert broken == []
        assert page.evaluate("document.images.length") > 0
        headings = page.locator("section > h2").all_inner_texts()
        assert headings == [title for _, title in SECTIONS]
        assert page.locator("#confusion-matrix tbody tr").count() == 27
        assert page.locator("#confusion-matrix tbody td[style]").count() == 27 * 27
        assert page.locator("#confusion-matrix thead th[title]").count() == 27
        assert page.locator("#gradcam figure.cam img").count() > 0, "Grad-CAM of the demo ResNet rendered"
        assert page.locator("#cleaning img").count() == len(
            list((tiny_built_repo / "reports/figures/image_clean").glob("*.png"))
        )
        # the trust sections read the stages' real outputs: the calibrator fusion chose, the review threshold,
        # the flagged rows of the label audit, intervals in the scores table
        fusion = json.loads((tiny_built_repo / "reports/fusion.json").read_text())
        calibration = page.locator("#calibration").inner_text()
        assert f"method chosen out of fold: {fusion['calibration']['chosen']}" in calibration
        assert page.locator("#calibration svg").count() == 2  # reliability before / after
        assert f"{fusion['review']['threshold']:.4f}" in page.locator("#review").inner_text()
        assert page.locator("#review polyline").count() == 1
        assert page.locator("#metrics small.ci").count() > 0 and page.locator("#fusion-gain").count() == 1
        flagged = len((tiny_built_repo / "reports/label_issues.csv").read_text().splitlines()) - 1
        assert page.locator("#label-audit figure").count() == min(flagged, ReportConfig().label_issues)

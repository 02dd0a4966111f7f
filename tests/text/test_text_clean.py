"""text_clean end to end on the tiny catalog: columns, language accuracy, row accounting, the stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.text.text_clean import (
    TEXT_COLUMNS,
    TextCleanConfig,
    clean_frame,
    clean_with_report,
    duplicate_report,
    stage_report,
)
from tests.helpers.stagerun import default_params, error_lines, run_stage_script, with_overrides


def config(**overrides) -> TextCleanConfig:
    params = with_overrides(default_params(), {"text_clean.n_jobs": 1, **overrides})
    return parse_section(TextCleanConfig, params["text_clean"], "text_clean")


@pytest.fixture(scope="module")
def cleaned(tiny_catalog):
    return clean_with_report(tiny_catalog, config())


def test_columns_and_one_row_per_catalog_row(cleaned, tiny_catalog):
    frame, _ = cleaned
    assert tuple(frame.columns) == TEXT_COLUMNS
    assert frame["row_id"].tolist() == tiny_catalog["row_id"].tolist()
    assert frame["text_empty"].dtype == bool and frame["translated"].dtype == bool
    assert not frame["translated"].any()  # backend none
    assert frame["lang_conf"].between(0, 1).all()
    light = frame["text_light"].to_numpy(dtype=object)
    assert not any("<" in t and ">" in t for t in light)
    assert not any("&eacute;" in t or "&nbsp;" in t for t in light)


def test_language_accuracy_on_planted_languages(cleaned, tiny_catalog, tiny_sample):
    truth = json.loads((tiny_sample / "defects.json").read_text())["languages"]
    expected = {i: lang for lang, rows in truth.items() for i in rows}
    frame, _ = cleaned
    got = dict(zip(tiny_catalog["orig_index"].tolist(), frame["lang"].to_numpy(dtype=object)))
    accuracy = np.mean([got[i] == lang for i, lang in expected.items()])
    assert len(expected) == len(tiny_catalog)
    assert accuracy >= 0.95, f"language accuracy {accuracy:.3f}"
    for lang in ("en", "de"):  # the minority languages are found, not just defaulted to French
        rows = truth.get(lang, [])
        if len(rows) >= 5:
            assert np.mean([got[i] == lang for i in rows]) >= 0.9


def test_mojibake_rows_are_repaired(cleaned, tiny_catalog, tiny_sample):
    rows = json.loads((tiny_sample / "defects.json").read_text())["mojibake_rows"]
    frame, _ = cleaned
    by_index = dict(zip(tiny_catalog["orig_index"].tolist(), frame["text_light"].to_numpy(dtype=object)))
    assert all("Ã" not in by_index[i] for i in rows)


def test_duplicates_are_counted_not_dropped(cleaned, tiny_catalog, tiny_sample):
    truth = json.loads((tiny_sample / "defects.json").read_text())
    frame, stats = cleaned
    report = stage_report(tiny_catalog, frame, stats, config())
    assert report["rows_in"] == report["rows_out"] == len(tiny_catalog) and report["rows_dropped"] == 0
    assert report["duplicates"]["redundant_rows"] >= len(truth["duplicate_texts"])
    assert report["duplicates"]["conflicting_label_groups"] >= len(truth["conflicting_duplicate_texts"])
    index_to_text = dict(zip(tiny_catalog["orig_index"].tolist(), frame["text_light"].to_numpy(dtype=object)))
    assert all(index_to_text[a] == index_to_text[b] for a, b in truth["duplicate_texts"])
    assert sum(v["rows"] for v in report["language"]["distribution"].values()) == len(tiny_catalog)


def test_duplicate_report_counts_conflicts():
    texts = pd.Series(["a", "a", "b", "b", "b", "c", ""])
    labels = pd.Series([10, 10, 40, 50, pd.NA, 60, 10], dtype="Int64")
    assert duplicate_report(texts, labels) == {
        "groups": 2,
        "rows_in_groups": 5,
        "redundant_rows": 3,
        "conflicting_label_groups": 1,
        "conflicting_label_rows": 2,
    }


def test_empty_texts_are_kept_and_flagged():
    rows = pd.DataFrame(
        {
            "row_id": [0, 1, 2],
            "designation": ["<p></p>", "Vélo rouge", "&nbsp;"],
            "description": [None, "<b>12 cm</b>", float("nan")],
        }
    )
    frame = clean_frame(rows, config())
    assert frame["row_id"].tolist() == [0, 1, 2]
    assert frame["text_empty"].tolist() == [True, False, True]
    assert frame["lang"].tolist()[0] == "und"
    assert frame["text_norm"].tolist() == ["", "velo rouge", ""]


def test_bad_param_names_the_key():
    with pytest.raises(PipelineError, match=r"text_clean.normalise.lemmatizer = 'stem'"):
        config(**{"text_clean.normalise.lemmatizer": "stem"})
    with pytest.raises(PipelineError, match=r"text_clean.language.candidates contains 'zz'"):
        clean_frame(
            pd.DataFrame({"row_id": [0], "designation": ["x"], "description": [None]}),
            config(**{"text_clean.language.candidates": ["fr", "zz"]}),
        )


def test_missing_input_column_is_one_line():
    with pytest.raises(PipelineError, match="missing column description"):
        clean_frame(pd.DataFrame({"row_id": [0], "designation": ["x"]}), config())


def test_stage_writes_outputs(tmp_path, tiny_catalog):
    catalog = tiny_catalog.head(60)
    (tmp_path / "data/interim").mkdir(parents=True)
    catalog.to_parquet(tmp_path / "data/interim/catalog.parquet", index=False)
    result = run_stage_script("text_clean", tmp_path, {"text_clean.n_jobs": 1})
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_parquet(tmp_path / "data/processed/text.parquet")
    assert len(table) == 60 and tuple(table.columns) == TEXT_COLUMNS
    report = json.loads((tmp_path / "reports/text_clean.json").read_text())
    assert report["rows_out"] == 60 and "distribution" in report["language"]
    recorded = json.loads((tmp_path / "data/processed/text_clean.json").read_text())["text_clean"]
    assert recorded["normalise"]["lemmatizer"] == default_params()["text_clean"]["normalise"]["lemmatizer"]
    assert "n_jobs" not in recorded  # runtime knobs are not part of what the models were trained on


def test_stage_without_marian_weights_fails_in_one_line(tmp_path, tiny_catalog, monkeypatch):
    (tmp_path / "data/interim").mkdir(parents=True)
    tiny_catalog.head(5).to_parquet(tmp_path / "data/interim/catalog.parquet", index=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    result = run_stage_script("text_clean", tmp_path, {"text_clean.translation.backend": "marian"})
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "Helsinki-NLP/opus-mt-" in lines[0] and "download" in lines[0]
    assert not (tmp_path / "data/processed/text.parquet").exists()

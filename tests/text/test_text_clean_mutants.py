"""The text_clean library calls on hand-made rows with known answers (docs/mutation.md)."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rakuten.core.errors import PipelineError
from rakuten.text import text_clean as P
from rakuten.text.cleaning import clean_text, concat_fields
from rakuten.text.language import LanguageDetector

CFG = P.TextCleanConfig(n_jobs=1, max_chars=100)
LANGS = CFG.language.candidates


_DETECTOR = []


def _detect(text):
    """An independent detector (loading one takes ~1 s: made once)."""
    if not _DETECTOR:
        _DETECTOR.append(LanguageDetector(LANGS))
    return _DETECTOR[0].detect_one(text)


def test_clean_chunk_cleans_caps_and_falls_back_on_low_confidence():
    long = "mot " * 40  # 160 chars -> cut at a word boundary
    designations = ["<b>Le vélo rouge</b> de la maison", "", "ok", long, long]
    descriptions = ["avec&nbsp;panier", None, None, None, "x"]
    texts, langs, confs, truncated, fell_back = P._clean_chunk((designations, descriptions, 100, LANGS, 0.99, "it"))
    assert texts[0] == "Le vélo rouge de la maison avec panier" and texts[1] == "" and texts[2] == "ok"
    assert texts[3] == ("mot " * 25).strip() and len(texts[3]) == 99 and texts[4] == texts[3]
    assert truncated == 2
    # languages: the detector's answer unless its confidence is under 0.99 (then "it"); the empty text is "und"
    expected = []
    for t in texts:
        lang, conf = _detect(t)
        expected.append((lang if (not t or conf >= 0.99) else "it", conf))
    assert list(zip(langs, confs)) == expected
    assert langs[1] == "und" and confs[1] == 0.0
    assert fell_back == sum(1 for t, (lang, conf) in zip(texts, map(_detect, texts)) if t and conf < 0.99)
    assert fell_back >= 2
    texts, langs, confs, truncated, fell_back = P._clean_chunk((["bonjour"], [None], 100, LANGS, 0.0, "it"))
    assert (truncated, fell_back) == (0, 0) and langs == [_detect("bonjour")[0]]
    lang, conf = _detect("bonjour le monde")  # a confidence equal to the threshold is enough
    _, langs, _, _, fell_back = P._clean_chunk((["bonjour le monde"], [None], 100, LANGS, conf, "it"))
    assert langs == [lang] and fell_back == 0


def _pid_chunk(args):
    """Stand-in for _clean_chunk (top level: picklable for the process pool): tags each text with the
    worker's pid."""
    designations, descriptions, max_chars, languages, min_conf, fallback = args
    n = len(designations)
    return [f"{d}|{max_chars}|{os.getpid()}" for d in designations], [fallback] * n, [min_conf] * n, 1, 2


@pytest.mark.parametrize(
    "n, n_jobs, chunks, in_process",
    [
        (10, 1, 1, True),
        (10, 2, 1, True),
        (4001, 1, 2, True),
        (10001, 1, 4, True),
        (4001, 2, 2, False),
    ],
)
def test_light_clean_chunks_and_processes(monkeypatch, n, n_jobs, chunks, in_process):
    # chunks = max(1, min(4 * n_jobs, n // 2000 or 1)); a pool only with n_jobs > 1 and several chunks
    seen = []

    def chunk(args):
        seen.append(len(args[0]))
        return _pid_chunk(args)

    monkeypatch.setattr(P, "_clean_chunk", chunk if in_process else _pid_chunk)
    cfg = replace(CFG, n_jobs=n_jobs, max_chars=123)
    cfg = replace(cfg, language=replace(cfg.language, min_confidence=0.25, fallback="de"))
    designations = [f"d{i}" for i in range(n)]
    texts, langs, confs, counts = P.light_clean(designations, [None] * n, cfg)
    names, _, pids = zip(*(t.split("|") for t in texts))
    assert list(names) == designations and all(t.split("|")[1] == "123" for t in texts)
    assert langs.dtype == object and langs.tolist() == ["de"] * n
    assert confs.dtype == np.float32 and confs.tolist() == [0.25] * n
    assert counts == {"truncated": chunks, "language_fallback": 2 * chunks}
    if in_process:
        assert seen == np.diff(np.linspace(0, n, chunks + 1).astype(int)).tolist()
        assert set(pids) == {str(os.getpid())}
    else:
        assert str(os.getpid()) not in set(pids)


class _FakeTranslator:
    def languages(self):
        return {"en"}

    def translate(self, texts, source_lang):
        return [None if "fail" in t else f"FR({t})" for t in texts]


class _FakeNormaliser:
    """Stands in for the spaCy normaliser (rakuten.text.normalise, tested in test_text_normalise.py):
    loading spaCy takes seconds, and what is checked here is how its output is used."""

    configs = []

    def __init__(self, config):
        self.configs.append(config)

    def normalise(self, texts):
        return [" ".join(w.lower() for w in t.split() if len(w) > 3) for t in texts]


@pytest.fixture(scope="module")
def cleaned():
    rows = pd.DataFrame(
        {
            "row_id": [5.0, 3.0, 9.0, 4.0],
            "designation": [
                "<p></p>",
                "Vélo rouge pour enfant",
                "The red bicycle for children",
                "This translation will fail today",
            ],
            "description": [None, "<b>12 cm</b>", float("nan"), None],
            "prdtypecode": [10, 40, 40, 50],
        }
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(P, "make_translator", lambda *a, **k: _FakeTranslator())
    mp.setattr(P, "Normaliser", _FakeNormaliser)
    try:
        frame, stats = P.clean_with_report(rows, CFG)
    finally:
        mp.undo()
    return rows, frame, stats


def test_clean_with_report_columns_and_values(cleaned):
    rows, frame, stats = cleaned
    assert tuple(frame.columns) == P.TEXT_COLUMNS
    assert frame["row_id"].dtype == np.int64 and frame["row_id"].tolist() == [5, 3, 9, 4]
    light = [clean_text(concat_fields(d, s)) for d, s in zip(rows["designation"], rows["description"])]
    assert light[2].startswith("The red")
    en = [i for i in range(4) if _detect(light[i])[0] == "en"]
    assert en == [2, 3]
    expected_light = [light[0], light[1], f"FR({light[2]})", light[3]]
    assert frame["text_light"].tolist() == expected_light
    for col in ("text_light", "text_norm", "lang"):
        assert str(frame[col].dtype) == "string"
    assert frame["lang"].tolist() == ["und", _detect(light[1])[0], "en", "en"]
    assert frame["lang_conf"].dtype == np.float32
    assert frame["lang_conf"].tolist() == [np.float32(_detect(t)[1]) for t in light]
    assert frame["text_empty"].dtype == bool and frame["text_empty"].tolist() == [True, False, False, False]
    assert frame["translated"].tolist() == [False, False, True, False]
    assert frame["text_norm"].tolist() == _FakeNormaliser(None).normalise(expected_light)
    assert frame["text_norm"].tolist()[1] == "vélo rouge pour enfant"
    assert _FakeNormaliser.configs[0] == CFG.normalise
    low = sum(1 for t in light if t and _detect(t)[1] < CFG.language.min_confidence)
    assert stats == {"truncated": 0, "language_fallback": low, "translation_failed": 1, "norm_empty": 1}


def test_clean_frame_is_the_table_of_clean_with_report(cleaned, monkeypatch):
    rows, frame, _ = cleaned
    monkeypatch.setattr(P, "make_translator", lambda *a, **k: _FakeTranslator())
    monkeypatch.setattr(P, "Normaliser", _FakeNormaliser)
    pd.testing.assert_frame_equal(P.clean_frame(rows, CFG), frame)


def test_missing_input_column_message():
    with pytest.raises(
        PipelineError,
        match=r"^catalog rows: missing column designation; expected row_id, "
        r"designation, description$",
    ):
        P.clean_with_report(pd.DataFrame({"row_id": [1], "description": ["x"]}), CFG)


def test_translator_is_built_from_the_config(monkeypatch):
    got = []

    def fake(*args):
        got.append(args)
        raise PipelineError("stop")

    monkeypatch.setattr(P, "make_translator", fake)
    tr = replace(CFG.translation, chunk_chars=77, batch_size=3, cache_dir="c/d")
    with pytest.raises(PipelineError, match="stop"):
        P.clean_with_report(
            pd.DataFrame({"row_id": [1], "designation": ["x"], "description": [None]}), replace(CFG, translation=tr)
        )
    assert got == [("none", tr.models, "c/d", 77, 3)]


def test_duplicate_report_more_cases():
    texts = pd.Series(["a", "a", "", "", "b", "c", "c", "c"])
    labels = pd.Series([10, 40, 10, 40, 10, 50, 50, None], dtype="Int64")
    # "" is never a duplicate; a: 2 rows, labels 10/40 (conflict); c: 3 rows, labels 50/50/NA (no conflict)
    assert P.duplicate_report(texts, labels) == {
        "groups": 2,
        "rows_in_groups": 5,
        "redundant_rows": 3,
        "conflicting_label_groups": 1,
        "conflicting_label_rows": 2,
    }
    assert P.duplicate_report(pd.Series(["x", "y"]), pd.Series([None, None])) == {
        "groups": 0,
        "rows_in_groups": 0,
        "redundant_rows": 0,
        "conflicting_label_groups": 0,
        "conflicting_label_rows": 0,
    }


def test_text_clean_report_exact(cleaned):
    rows, frame, stats = cleaned
    report = P.stage_report(rows, frame, stats, CFG)
    assert report == {
        "rows_in": 4,
        "rows_out": 4,
        "rows_dropped": 0,
        "empty_text_rows": 1,
        "empty_norm_rows": 1,
        "truncated_rows": 0,
        "max_chars": 100,
        "duplicates": {
            "groups": 0,
            "rows_in_groups": 0,
            "redundant_rows": 0,
            "conflicting_label_groups": 0,
            "conflicting_label_rows": 0,
        },
        "language": {
            "candidates": list(LANGS),
            "low_confidence_to_fallback": stats["language_fallback"],
            "distribution": report["language"]["distribution"],
        },
        "translation": {"backend": "none", "translated_rows": 1, "failed_rows": 1},
        "normalise": {"lemmatizer": "lookup"},
    }
    dist = report["language"]["distribution"]
    assert dist["en"] == {"rows": 2, "share": 0.5} and sum(v["rows"] for v in dist.values()) == 4


def test_text_clean_report_without_labels_and_with_fewer_rows():
    catalog = pd.DataFrame({"row_id": [1, 2, 3]})
    frame = pd.DataFrame(
        {
            "text_light": pd.array(["dup", "dup", "dup"], dtype="string"),
            "text_empty": [False] * 3,
            "lang": ["fr", "fr", "en"],
            "translated": [False, True, False],
        }
    )
    stats = {"norm_empty": 2, "truncated": 3, "language_fallback": 4, "translation_failed": 5}
    report = P.stage_report(catalog, frame.iloc[:2], stats, replace(CFG, max_chars=500))
    assert (report["rows_in"], report["rows_out"], report["rows_dropped"]) == (3, 2, 1)
    assert (report["empty_norm_rows"], report["truncated_rows"], report["max_chars"]) == (2, 3, 500)
    assert report["duplicates"] == {
        "groups": 1,
        "rows_in_groups": 2,
        "redundant_rows": 1,
        "conflicting_label_groups": 0,
        "conflicting_label_rows": 0,
    }
    assert report["language"]["low_confidence_to_fallback"] == 4
    assert report["translation"] == {"backend": "none", "translated_rows": 1, "failed_rows": 5}
    assert report["language"]["distribution"] == {"fr": {"rows": 2, "share": 1.0}}


def test_text_clean_report_counts_label_conflicts_of_the_catalog():
    catalog = pd.DataFrame({"row_id": [1, 2, 3], "prdtypecode": pd.array([10, 40, 10], dtype="Int64")})
    frame = pd.DataFrame(
        {
            "text_light": pd.array(["dup", "dup", "x"], dtype="string"),
            "text_empty": [False] * 3,
            "lang": ["fr"] * 3,
            "translated": [False] * 3,
        }
    )
    stats = {"norm_empty": 0, "truncated": 0, "language_fallback": 0, "translation_failed": 0}
    report = P.stage_report(catalog, frame, stats, CFG)
    assert report["duplicates"] == {
        "groups": 1,
        "rows_in_groups": 2,
        "redundant_rows": 1,
        "conflicting_label_groups": 1,
        "conflicting_label_rows": 2,
    }


def test_empty_input_gives_an_empty_table_with_the_contract_types(monkeypatch):
    monkeypatch.setattr(P, "make_translator", lambda *a, **k: _FakeTranslator())
    monkeypatch.setattr(P, "Normaliser", _FakeNormaliser)
    frame, stats = P.clean_with_report(pd.DataFrame({"row_id": [], "designation": [], "description": []}), CFG)
    assert len(frame) == 0 and tuple(frame.columns) == P.TEXT_COLUMNS
    assert [str(t) for t in frame.dtypes] == ["int64", "string", "string", "string", "float32", "bool", "bool"]
    assert stats == {"truncated": 0, "language_fallback": 0, "translation_failed": 0, "norm_empty": 0}


def test_unknown_candidate_language_fails_before_any_model_is_loaded(monkeypatch):
    loaded = []
    monkeypatch.setattr(P, "make_translator", lambda *a, **k: loaded.append("translator"))
    monkeypatch.setattr(P, "Normaliser", lambda cfg: loaded.append("normaliser"))
    cfg = replace(CFG, language=replace(CFG.language, candidates=("fr", "zz")))
    with pytest.raises(PipelineError, match=r"text_clean\.language\.candidates contains 'zz'"):
        P.clean_with_report(pd.DataFrame({"row_id": [1], "designation": ["x"], "description": [None]}), cfg)
    assert loaded == []


class _InlinePool:
    """An executor that runs ``map`` in this process (records the pool size it was asked for)."""

    sizes = []

    def __init__(self, n_jobs):
        self.sizes.append(n_jobs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, tasks):
        return map(fn, tasks)


def test_light_clean_pool_gets_n_jobs_workers(monkeypatch):
    _InlinePool.sizes.clear()
    monkeypatch.setattr(P, "process_pool", _InlinePool)
    monkeypatch.setattr(P, "_clean_chunk", _pid_chunk)
    texts, _, _, counts = P.light_clean([f"d{i}" for i in range(6001)], [None] * 6001, replace(CFG, n_jobs=3))
    assert _InlinePool.sizes == [3] and counts == {"truncated": 3, "language_fallback": 6}  # 6001 // 2000 = 3 chunks
    assert len(texts) == 6001

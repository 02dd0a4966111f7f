"""The preprocessing record (rakuten.contracts.preprocessing) on hand-made declarations and records (docs/mutation.md).

``Clean`` stands in for a cleaning section: two input knobs, a nested section with one runtime knob, a
runtime knob without a default, a runtime nested section and a runtime ``n_jobs``; so every rule (which
knobs are recorded, where a runtime knob comes from, who is blamed for a bad value) is shown on values
written out here, independently of params.yaml.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from rakuten.contracts import preprocessing as PP
from rakuten.core.config import knob, parse_section, runtime_keys
from rakuten.core.errors import PipelineError
from tests.helpers.guards import ascii_locale  # noqa: F401 (fixtures)


@dataclass(frozen=True)
class Inner:
    mode: str = knob("lookup", "how", choices=("lookup", "rule", "none"))
    batch: int = knob(64, "items per batch", lo=1, runtime=True)


@dataclass(frozen=True)
class Sheet:
    examples: int = knob(8, "lines", lo=0)


@dataclass(frozen=True)
class Clean:
    size: int = knob(224, "side", lo=1)
    n_jobs: int = knob(2, "processes", lo=1, runtime=True)
    cache: str | None = knob(None, "cache folder", runtime=True)
    inner: Inner = knob(Inner(), "nested")
    sheet: Sheet = knob(Sheet(), "side reports", runtime=True)
    tags: tuple[str, ...] = knob(("a", "b"), "kept tags")


DECL = {"text_clean": Clean, "image_clean": Clean}
RECORD = {"size": 224, "inner": {"mode": "lookup"}, "tags": ["a", "b"]}  # Clean() as recorded


def test_the_declaration_used_here():
    assert runtime_keys(Clean) == ("n_jobs", "cache", "inner.batch", "sheet")


# --------------------------------------------------------------------------- what is recorded


def test_record_keeps_the_input_knobs_as_plain_json():
    cfg = Clean(size=5, n_jobs=9, cache="/c", inner=Inner("rule", 3), sheet=Sheet(1), tags=("x",))
    assert PP.record(cfg) == {"size": 5, "inner": {"mode": "rule"}, "tags": ["x"]}
    assert PP.record(Clean()) == RECORD
    assert cfg.inner.batch == 3 and cfg.tags == ("x",)  # the config is untouched


def test_without_drops_dotted_keys_on_a_copy():
    values = {"a": 1, "b": {"c": 2, "d": {"e": 3, "f": 4}}, "g": [1], "h": 5}
    out = PP._without(values, ["a", "b.d.e", "b.x", "x.y.z", "g.0", "h.i", "b.d.f.deeper"])
    assert out == {"b": {"c": 2, "d": {"f": 4}}, "g": [1], "h": 5}
    assert values == {"a": 1, "b": {"c": 2, "d": {"e": 3, "f": 4}}, "g": [1], "h": 5}
    assert PP._without({"a b": 1, "a": {"b": 2}}, ["a b"]) == {"a": {"b": 2}}
    assert PP._without({}, []) == {}


def test_input_knobs_converts_to_json_values_first():
    values = {"size": 3, "n_jobs": 4, "inner": {"mode": "rule", "batch": 1}, "tags": ("t",), 7: "seven"}
    assert PP._input_knobs(values, Clean) == {"size": 3, "inner": {"mode": "rule"}, "tags": ["t"], "7": "seven"}
    assert values["inner"] == {"mode": "rule", "batch": 1}


def test_unknown_sections_are_refused(tmp_path):
    with pytest.raises(PipelineError) as info:
        PP.write_record("text", Clean(), tmp_path / "r.json")
    assert str(info.value) == "unknown preprocessing section 'text'; expected one of text_clean, image_clean"
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(PipelineError, match="^unknown preprocessing section 'x'; "):
        PP.load_records(["text_clean", "x"][1:])


def test_write_record_to_a_path_or_the_stage_output(tmp_path, monkeypatch):
    PP.write_record("image_clean", Clean(size=7), tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"image_clean": {**RECORD, "size": 7}}
    assert (tmp_path / "r.json").read_text().startswith('{\n  "image_clean": {\n    "inner"')  # write_json
    monkeypatch.chdir(tmp_path)
    PP.write_record("text_clean", Clean(size=8), "t.json")
    PP.write_record("text_clean", Clean(size=9))
    assert json.loads(Path("t.json").read_text()) == {"text_clean": {**RECORD, "size": 8}}
    assert json.loads(Path("data/processed/text_clean.json").read_text()) == {"text_clean": {**RECORD, "size": 9}}
    assert not Path("data/processed/image_clean.json").exists()


# --------------------------------------------------------------------------- reading records


def test_read_record_returns_the_mapping(tmp_path, ascii_locale):
    (tmp_path / "r.json").write_text(json.dumps({"text_clean": {"a": 1}, "image_clean": {}}), encoding="utf-8")
    assert PP.read_record(str(tmp_path / "r.json")) == {"text_clean": {"a": 1}, "image_clean": {}}
    (tmp_path / "u.json").write_bytes('{"text_clean": {"k": "caf\u00e9"}}'.encode("utf-8"))
    assert PP.read_record(tmp_path / "u.json") == {"text_clean": {"k": "caf\u00e9"}}


def test_a_missing_record_is_one_line(tmp_path):
    with pytest.raises(PipelineError) as info:
        PP.read_record(tmp_path / "none.json")
    assert str(info.value) == (
        f"{tmp_path / 'none.json'}: not found; expected the preprocessing record the model "
        "was trained with (rerun `dvc repro`)"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"{not json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b'{"a": "\xe9"}', "'utf-8' codec can't decode byte 0xe9 in position 7: invalid continuation byte"),
        (None, "[Errno 21] Is a directory: '{path}'"),
    ],
)
def test_an_unreadable_record_is_one_line(tmp_path, content, reason):
    path = tmp_path / "r.json"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(PipelineError) as info:
        PP.read_record(path)
    assert str(info.value) == f"{path}: not a preprocessing record ({reason.format(path=path)})"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_only_the_first_line_of_a_reason_is_kept(tmp_path, monkeypatch):
    def two_lines(*args, **kwargs):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(PP.json, "loads", two_lines)
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(PipelineError) as info:
        PP.read_record(tmp_path / "r.json")
    assert str(info.value) == f"{tmp_path / 'r.json'}: not a preprocessing record (first line)"


@pytest.mark.parametrize(
    "data",
    [
        [1, 2],
        {},
        {"text_clean": {}, "other": {}},
        {"text_clean": [1]},
        {"image_clean": {}, "text_clean": None},
        "text",
        None,
    ],
)
def test_a_record_of_another_shape_is_refused(tmp_path, data):
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(PipelineError) as info:
        PP.read_record(tmp_path / "r.json")
    assert str(info.value) == f"{tmp_path / 'r.json'}: expected a mapping of text_clean / image_clean to their values"


def test_load_records_reads_each_stage_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    PP.write_record("text_clean", Clean(size=1))
    PP.write_record("image_clean", Clean(size=2))
    assert PP.load_records(["image_clean", "text_clean"]) == {
        "image_clean": {**RECORD, "size": 2},
        "text_clean": {**RECORD, "size": 1},
    }
    assert PP.load_records([]) == {}
    Path("data/processed/image_clean.json").write_text(json.dumps({"text_clean": RECORD}))
    with pytest.raises(PipelineError) as info:
        PP.load_records(["text_clean", "image_clean"])
    assert str(info.value) == ("data/processed/image_clean.json: no image_clean section; rerun `dvc repro image_clean`")
    Path("data/processed/text_clean.json").unlink()
    with pytest.raises(PipelineError, match=r"^data/processed/text_clean\.json: not found; "):
        PP.load_records(["text_clean"])


def test_save_with_model_writes_the_records_into_the_model_folder(tmp_path):
    PP.save_with_model(str(tmp_path / "m"), {"text_clean": {"b": 1, "a": [2]}})
    assert (
        tmp_path / "m" / "preprocessing.json"
    ).read_text() == '{\n  "text_clean": {\n    "a": [\n      2\n    ],\n    "b": 1\n  }\n}\n'


# --------------------------------------------------------------------------- differences


def test_differences_name_every_dotted_key():
    a = {"x": 1, "n": {"p": 2, "q": {"r": 3}}, "same": [1], "gone": 0}
    b = {"x": 2, "n": {"p": 2, "q": {"r": 4}}, "same": [1], "new": None}
    assert PP.differences(a, b) == [("gone", 0, "(absent)"), ("n.q.r", 3, 4), ("new", "(absent)", None), ("x", 1, 2)]
    assert PP.differences(a, b, "sec") == [
        ("sec.gone", 0, "(absent)"),
        ("sec.n.q.r", 3, 4),
        ("sec.new", "(absent)", None),
        ("sec.x", 1, 2),
    ]
    assert PP.differences(a, a) == [] and PP.differences({}, {}) == []
    assert PP.differences(1, 1) == [] and PP.differences(1, 2) == [("", 1, 2)]
    assert PP.differences({"k": 1}, 5, "s") == [("s", {"k": 1}, 5)]
    assert PP.differences({"k": {"a": 1}}, {"k": [1]}) == [("k", {"a": 1}, [1])]


def test_differences_sort_mixed_keys_as_text():
    assert PP.differences({2: "a", "10": "b", "b": 1}, {}) == [
        ("10", "b", "(absent)"),
        ("2", "a", "(absent)"),
        ("b", 1, "(absent)"),
    ]


# --------------------------------------------------------------------------- the models' records


def model(models: Path, name: str, record) -> Path:
    (models / name).mkdir(parents=True, exist_ok=True)
    path = models / name / "preprocessing.json"
    path.write_text(json.dumps(record))
    return path


def test_load_trained_merges_agreeing_models(tmp_path):
    text = {**RECORD, "size": 1}
    image = {**RECORD, "size": 2}
    a = model(tmp_path, "a", {"text_clean": text})
    b = model(tmp_path, "b", {"image_clean": image, "text_clean": text})
    model(tmp_path, "c", {"text_clean": text})
    trained, source = PP.load_trained(str(tmp_path), {"a": "text", "b": "image", "c": "text"})
    assert trained == {"text_clean": text, "image_clean": image}
    assert source == {"text_clean": a, "image_clean": b}
    assert PP.load_trained(tmp_path, {"b": "tabular"}) == (
        {"image_clean": image, "text_clean": text},
        {"image_clean": b, "text_clean": b},
    )
    assert PP.load_trained(tmp_path, {}) == ({}, {})


def test_a_model_without_its_modality_section_is_named(tmp_path):
    path = model(tmp_path, "cam", {"image_clean": RECORD})
    with pytest.raises(PipelineError) as info:
        PP.load_trained(tmp_path, {"cam": "text"})
    assert str(info.value) == (
        f"{path}: no text_clean section; expected the cleaning of the text input the model "
        "was trained on (rerun `dvc repro cam`)"
    )
    with pytest.raises(
        PipelineError,
        match=r"/res/preprocessing\.json: no image_clean section; expected the "
        r"cleaning of the image input .*`dvc repro res`",
    ):
        PP.load_trained(tmp_path, {"res": "image"} if model(tmp_path, "res", {"text_clean": RECORD}) else {})
    with pytest.raises(PipelineError, match=r"/gone/preprocessing\.json: not found"):
        PP.load_trained(tmp_path, {"gone": "text"})


def test_disagreeing_models_name_both_files_and_the_first_key(tmp_path):
    first = model(tmp_path, "a", {"text_clean": {**RECORD, "inner": {"mode": "lookup"}, "size": 1}})
    model(tmp_path, "b", {"text_clean": {**RECORD, "inner": {"mode": "lookup"}, "size": 1}})
    third = model(tmp_path, "c", {"text_clean": {**RECORD, "inner": {"mode": "rule"}, "size": 3}})
    with pytest.raises(PipelineError) as info:
        PP.load_trained(tmp_path, {"a": "text", "b": "text", "c": "text"})
    assert str(info.value) == (
        f"{third}: text_clean.inner.mode = 'rule' but {first} has 'lookup'; expected every "
        "model trained on the same preprocessing (rerun `dvc repro`)"
    )


# --------------------------------------------------------------------------- against today's params


def test_changed_since_training_ignores_runtime_knobs():
    trained = {"text_clean": RECORD, "image_clean": {**RECORD, "size": 5}}
    today = {
        "text_clean": {**RECORD, "n_jobs": 8, "inner": {"mode": "lookup", "batch": 1}, "sheet": {"examples": 0}},
        "image_clean": {**RECORD, "size": 6, "tags": ["a"]},
    }
    assert PP.changed_since_training(trained, today, DECL) == [
        ("image_clean.size", 5, 6),
        ("image_clean.tags", ["a", "b"], ["a"]),
    ]
    assert PP.changed_since_training(trained, {"text_clean": RECORD, "image_clean": {**RECORD, "size": 5}}, DECL) == []


def test_a_section_absent_or_not_a_mapping_today_changes_every_knob():
    trained = {"text_clean": {"size": 1, "inner": {"mode": "rule"}}}
    expected = [("text_clean.inner", {"mode": "rule"}, "(absent)"), ("text_clean.size", 1, "(absent)")]
    assert PP.changed_since_training(trained, {}, DECL) == expected
    assert PP.changed_since_training(trained, {"text_clean": None}, DECL) == expected
    assert PP.changed_since_training(trained, {"text_clean": [1]}, DECL) == expected


def test_with_runtime_completes_from_today_else_the_defaults():
    trained = {"text_clean": {"size": 3, "inner": {"mode": "rule"}, "tags": ["z"]}}
    today = {"text_clean": {"n_jobs": 7, "inner": {"batch": 5}, "size": 999, "sheet": {"examples": 1}, "cache": "/c"}}
    assert PP.with_runtime(trained, today, DECL) == {
        "text_clean": {
            "size": 3,
            "inner": {"mode": "rule", "batch": 5},
            "tags": ["z"],
            "n_jobs": 7,
            "cache": "/c",
            "sheet": {"examples": 1},
        }
    }
    assert PP.with_runtime(trained, {}, DECL) == {
        "text_clean": {  # no default for cache: left out
            "size": 3,
            "inner": {"mode": "rule", "batch": 64},
            "tags": ["z"],
            "n_jobs": 2,
            "sheet": {"examples": 8},
        }
    }
    assert trained == {"text_clean": {"size": 3, "inner": {"mode": "rule"}, "tags": ["z"]}}  # untouched
    assert PP.with_runtime({}, today, DECL) == {}


def test_with_runtime_creates_missing_parents_and_copies_values():
    sheet = {"examples": 3}
    out = PP.with_runtime({"image_clean": {"size": 1}}, {"image_clean": {"sheet": sheet, "inner": None}}, DECL)
    assert out == {"image_clean": {"size": 1, "n_jobs": 2, "inner": {"batch": 64}, "sheet": {"examples": 3}}}
    out["image_clean"]["sheet"]["examples"] = 99
    assert sheet == {"examples": 3}
    deep = {"examples": [3]}  # copied all the way down (not parsed here)
    out = PP.with_runtime({"image_clean": {}}, {"image_clean": {"sheet": deep}}, DECL)
    out["image_clean"]["sheet"]["examples"].append(4)
    assert deep == {"examples": [3]}
    parsed = parse_section(Clean, PP.with_runtime({"text_clean": RECORD}, {}, DECL)["text_clean"], "text_clean")
    assert parsed == Clean()


def test_lookup():
    root = {"a": {"b": {"c": 0}}, "l": [1]}
    assert PP._lookup(root, "a.b.c") == 0 and PP._lookup(root, "a.b") == {"c": 0}
    assert PP._lookup(root, "a.x") is PP._MISSING and PP._lookup(root, "a.b.c.d") is PP._MISSING
    assert PP._lookup(root, "l.0") is PP._MISSING and PP._lookup(None, "a") is PP._MISSING


def test_check_runtime_blames_todays_file_for_a_bad_runtime_knob():
    trained = {"text_clean": RECORD}
    PP.check_runtime(trained, {"text_clean": {"n_jobs": 4}}, "my.yaml", DECL)  # fine: nothing raised
    with pytest.raises(PipelineError) as info:
        PP.check_runtime(trained, {"text_clean": {"n_jobs": "many"}}, "my.yaml", DECL)
    assert str(info.value) == "my.yaml: text_clean.n_jobs = 'many', expected an integer"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(PipelineError, match=r"^my\.yaml: text_clean\.inner\.batch = 0, expected "):
        PP.check_runtime(trained, {"text_clean": {"inner": {"batch": 0}}}, "my.yaml", DECL)
    with pytest.raises(PipelineError, match=r"^my\.yaml: unknown key text_clean\.sheet\.nope"):
        PP.check_runtime(trained, {"text_clean": {"sheet": {"nope": 1}}}, "my.yaml", DECL)


def test_check_runtime_leaves_a_bad_record_to_the_caller():
    bad = {"text_clean": {**RECORD, "size": -3}}
    PP.check_runtime(bad, {"text_clean": {"n_jobs": "many"}}, "my.yaml", DECL)  # the record's fault: no raise
    two = {"text_clean": {**RECORD, "size": -3}, "image_clean": RECORD}  # then today's fault is named
    with pytest.raises(PipelineError, match=r"^my\.yaml: image_clean\.n_jobs = 0, "):
        PP.check_runtime(two, {"text_clean": {}, "image_clean": {"n_jobs": 0}}, "my.yaml", DECL)


def test_warn_if_changed_logs_one_line_and_returns_the_keys(caplog):
    caplog.set_level(logging.WARNING, logger="rakuten.contracts.preprocessing")
    trained = {"text_clean": RECORD, "image_clean": {**RECORD, "size": 5}}
    today = {"text_clean": {**RECORD, "n_jobs": 9, "inner": {"mode": "rule"}}, "image_clean": {**RECORD, "size": 6}}
    assert PP.warn_if_changed(trained, today, "p.yaml", DECL) == ["text_clean.inner.mode", "image_clean.size"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "p.yaml changed preprocessing since the models were trained; predicting with the trained "
        "values (retrain with `dvc repro` to use the new ones): text_clean.inner.mode: trained "
        "'lookup', p.yaml now 'rule'; image_clean.size: trained 5, p.yaml now 6"
    ]
    caplog.clear()
    assert (
        PP.warn_if_changed(trained, {"text_clean": RECORD, "image_clean": {**RECORD, "size": 5}}, "p.yaml", DECL) == []
    )
    assert caplog.records == []
    with pytest.raises(PipelineError, match=r"^p\.yaml: text_clean\.n_jobs = 0, "):
        PP.warn_if_changed(trained, {"text_clean": {"n_jobs": 0}}, "p.yaml", DECL)
    assert caplog.records == []

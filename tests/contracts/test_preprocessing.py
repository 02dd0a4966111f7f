"""The preprocessing record: written by the cleaning stages, copied into each model, read back by predict."""

from __future__ import annotations

import json

import pytest

from rakuten.contracts import preprocessing as PP
from rakuten.core.config import parse_section, runtime_keys
from rakuten.core.errors import PipelineError
from rakuten.image.config import ImageCleanConfig
from rakuten.text.text_clean import TextCleanConfig
from tests.helpers.stagerun import default_params, with_overrides

PARAMS = default_params()
DECLARATIONS = {"text_clean": TextCleanConfig, "image_clean": ImageCleanConfig}


def _parsed(params: dict, section: str):
    return parse_section(DECLARATIONS[section], params[section], section)


def _trained(overrides: dict | None = None) -> dict:
    params = with_overrides(PARAMS, overrides or {})
    return {s: PP.record(_parsed(params, s)) for s in DECLARATIONS}


def _model(models_dir, name: str, record: dict) -> None:
    (models_dir / name).mkdir(parents=True, exist_ok=True)
    (models_dir / name / PP.FILE_NAME).write_text(json.dumps(record))


def test_runtime_knobs_are_declared_with_the_knobs():
    assert runtime_keys(TextCleanConfig) == (
        "n_jobs",
        "translation.batch_size",
        "translation.cache_dir",
        "normalise.batch_size",
        "normalise.n_jobs",
    )
    assert runtime_keys(ImageCleanConfig) == ("n_jobs", "contact_sheet")  # a runtime section, named once


def test_record_leaves_out_runtime_knobs_only():
    text = PP.record(_parsed(PARAMS, "text_clean"))
    assert "n_jobs" not in text and "batch_size" not in text["normalise"] and "n_jobs" not in text["normalise"]
    assert "cache_dir" not in text["translation"] and "batch_size" not in text["translation"]
    assert text["normalise"]["lemmatizer"] == "lookup" and text["max_chars"] == PARAMS["text_clean"]["max_chars"]
    image = PP.record(_parsed(PARAMS, "image_clean"))
    assert set(PARAMS["image_clean"]) - set(image) == {"n_jobs", "contact_sheet"}
    assert PARAMS["text_clean"]["n_jobs"] == 2  # the record is a copy: the section is untouched


def test_records_round_trip_through_the_model_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    PP.write_record("text_clean", _parsed(PARAMS, "text_clean"))
    records = PP.load_records(["text_clean"])
    PP.save_with_model("models/tfidf_svm", records)
    trained, sources = PP.load_trained("models", {"tfidf_svm": "text"})
    assert trained == {"text_clean": PP.record(_parsed(PARAMS, "text_clean"))}
    assert sources["text_clean"].as_posix() == "models/tfidf_svm/preprocessing.json"
    # completed with the runtime knobs, the record parses back into the config the stage ran with
    full = PP.with_runtime(trained, PARAMS, DECLARATIONS)["text_clean"]
    assert parse_section(TextCleanConfig, full, "text_clean") == parse_section(
        TextCleanConfig, PARAMS["text_clean"], "text_clean"
    )


def test_missing_or_malformed_records_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        PipelineError,
        match=r"^data/processed/text_clean\.json: not found; expected the "
        r"preprocessing record",
    ):
        PP.load_records(["text_clean"])
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(PipelineError, match="bad.json: expected a mapping of text_clean / image_clean"):
        PP.read_record(bad)
    bad.write_text("{not json")
    with pytest.raises(PipelineError, match="bad.json: not a preprocessing record"):
        PP.read_record(bad)


def test_models_must_record_their_modality_and_agree(tmp_path):
    trained = _trained()
    _model(tmp_path, "tfidf_svm", {"text_clean": trained["text_clean"]})
    _model(tmp_path, "resnet50", {"image_clean": trained["image_clean"]})
    got, _ = PP.load_trained(tmp_path, {"tfidf_svm": "text", "resnet50": "image"})
    assert got == trained
    _model(tmp_path, "fasttext", {"text_clean": _trained({"text_clean.normalise.lemmatizer": "none"})["text_clean"]})
    with pytest.raises(PipelineError) as err:
        PP.load_trained(tmp_path, {"tfidf_svm": "text", "fasttext": "text"})
    assert str(err.value) == (
        f"{tmp_path / 'fasttext' / PP.FILE_NAME}: text_clean.normalise.lemmatizer = 'none' "
        f"but {tmp_path / 'tfidf_svm' / PP.FILE_NAME} has 'lookup'; expected every model "
        "trained on the same preprocessing (rerun `dvc repro`)"
    )
    _model(tmp_path, "camembert", {"image_clean": trained["image_clean"]})
    with pytest.raises(PipelineError, match=r"camembert/preprocessing\.json: no text_clean section"):
        PP.load_trained(tmp_path, {"camembert": "text"})


def test_changed_knobs_are_named_with_both_values_and_runtime_knobs_ignored():
    trained = _trained()
    today = with_overrides(
        PARAMS,
        {
            "text_clean.normalise.lemmatizer": "rule",
            "text_clean.n_jobs": 8,
            "image_clean.size": 128,
            "image_clean.contact_sheet.examples": 2,
        },
    )
    assert PP.changed_since_training(trained, today, DECLARATIONS) == [
        ("text_clean.normalise.lemmatizer", "lookup", "rule"),
        ("image_clean.size", 224, 128),
    ]
    assert PP.changed_since_training(trained, PARAMS, DECLARATIONS) == []
    del today["image_clean"]["blur"]["threshold"]
    assert ("image_clean.blur.threshold", 8.0, "(absent)") in PP.changed_since_training(trained, today, DECLARATIONS)


def test_runtime_knobs_come_from_today_else_the_declared_defaults():
    trained = _trained({"text_clean.max_chars": 500})
    today = with_overrides(PARAMS, {"text_clean.n_jobs": 1, "text_clean.max_chars": 20000})
    full = PP.with_runtime(trained, today, DECLARATIONS)["text_clean"]
    assert full["n_jobs"] == 1 and full["max_chars"] == 500  # speed from today, cleaning as trained
    sections = PP.with_runtime(trained, {}, DECLARATIONS)
    text = parse_section(TextCleanConfig, sections["text_clean"], "text_clean")
    image = parse_section(ImageCleanConfig, sections["image_clean"], "image_clean")
    assert text.max_chars == 500 and text.n_jobs == TextCleanConfig().n_jobs
    assert image.size == PARAMS["image_clean"]["size"] and image.n_jobs == ImageCleanConfig().n_jobs


def _trained_models(tmp_path) -> tuple:
    """A models folder whose two models recorded the default preprocessing, and a stand-in fused model."""
    import types

    trained = _trained()
    _model(tmp_path, "tfidf_svm", {"text_clean": trained["text_clean"]})
    _model(tmp_path, "resnet50", {"image_clean": trained["image_clean"]})
    return types.SimpleNamespace(models=["tfidf_svm", "resnet50"], modalities=["text", "image"])


@pytest.mark.parametrize(
    "override, message",
    [
        ({"text_clean.n_jobs": "many"}, "my-params.yaml: text_clean.n_jobs = 'many', expected an integer"),
        (
            {"text_clean.normalise.n_jobs": 0},
            "my-params.yaml: text_clean.normalise.n_jobs = 0, expected an integer in [1, 64]",
        ),
        ({"image_clean.contact_sheet.nope": 1}, "my-params.yaml: unknown key image_clean.contact_sheet.nope"),
    ],
)
def test_a_bad_runtime_knob_of_todays_params_names_that_file_not_the_model(tmp_path, override, message):
    """Today's params only supply the runtime knobs, but a bad one used to be blamed on preprocessing.json."""
    from rakuten.serving.predict import Cleaners, trained_preprocessing

    fused = _trained_models(tmp_path)
    cleaners = Cleaners(text=None, image=None, configs=DECLARATIONS)
    with pytest.raises(PipelineError) as err:
        trained_preprocessing(tmp_path, fused, with_overrides(PARAMS, override), "my-params.yaml", cleaners)
    assert str(err.value).startswith(message) and PP.FILE_NAME not in str(err.value)
    assert "\n" not in str(err.value)
    sections = trained_preprocessing(tmp_path, fused, PARAMS, "my-params.yaml", cleaners)  # good params: parsed
    assert sections["text_clean"].n_jobs == PARAMS["text_clean"]["n_jobs"]


def test_a_bad_record_is_still_blamed_on_the_record(tmp_path):
    from rakuten.serving.predict import Cleaners, trained_preprocessing

    fused = _trained_models(tmp_path)
    record = _trained()["text_clean"] | {"max_chars": -3}
    _model(tmp_path, "tfidf_svm", {"text_clean": record})
    with pytest.raises(PipelineError, match=r"tfidf_svm/preprocessing\.json: text_clean\.max_chars = -3"):
        trained_preprocessing(tmp_path, fused, PARAMS, "my-params.yaml", Cleaners(None, None, DECLARATIONS))

"""The `rakuten predict` command, with small fake model modules and cleaners registered in the test
(the real cleaning and models: tests/integration/test_pipeline_dvc.py::test_predict_cli_reproduces_the_submission)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from rakuten.contracts import registry
from rakuten.contracts.classes import CLASS_CODES, N_CLASSES
from rakuten.contracts.preprocessing import record
from rakuten.core.config import parse_section
from rakuten.fusion import persistence
from rakuten.fusion.model import FusedModel
from rakuten.fusion.weights import SoftVote
from rakuten.image.config import ImageCleanConfig
from rakuten.serving import cli
from rakuten.serving import predict as predict_mod
from rakuten.text.text_clean import TextCleanConfig
from tests.helpers.stagerun import default_params, record_outputs, with_overrides

DECLARATIONS = {"text_clean": TextCleanConfig, "image_clean": ImageCleanConfig}


def _record(params: dict, section: str) -> dict:
    """The preprocessing record a cleaning stage run with ``params`` writes for ``section``."""
    return record(parse_section(DECLARATIONS[section], params[section], section))


IMAGE_CLASS = 5


def _peaked(n: int, classes: np.ndarray, mass: float) -> np.ndarray:
    p = np.full((n, N_CLASSES), (1 - mass) / (N_CLASSES - 1))
    p[np.arange(n), classes] = mass
    return p


def _fake_modules() -> dict[str, types.ModuleType]:
    text = types.ModuleType("fake_text_model")
    text.load = lambda d: {"dir": str(d)}
    # the text model "reads" the cleaned text: class = its length mod 27, probability 0.8
    text.predict_proba = lambda model, frame: _peaked(
        len(frame), frame["text_light"].str.len().to_numpy() % N_CLASSES, 0.8
    )
    image = types.ModuleType("fake_image_model")
    image.load = lambda d: {"dir": str(d)}
    image.predict_proba = lambda model, frame: _peaked(len(frame), np.full(len(frame), IMAGE_CLASS), 0.7)
    return {"fake_text_model": text, "fake_image_model": image}


def _fake_cleaners() -> predict_mod.Cleaners:
    from rakuten.image.config import ImageCleanConfig
    from rakuten.text.text_clean import TextCleanConfig

    def clean_text(rows: pd.DataFrame, cfg: TextCleanConfig) -> pd.DataFrame:
        text = (rows["designation"].fillna("") + " " + rows["description"].fillna("")).str.strip()
        if cfg.normalise.lemmatizer != "lookup":  # another cleaning -> another predicted class
            text = text.where(text == "", text + "??")
        return pd.DataFrame({"row_id": rows["row_id"], "text_light": text, "text_empty": text == ""})

    def clean_images(rows: pd.DataFrame, out_dir: Path, cfg: ImageCleanConfig, labels_split=None) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "row_id": rows["row_id"],
                "clean_path": [f"{out_dir}/{i}.jpg" for i in rows["row_id"]],
                "readable": rows["image_ok"].to_numpy(),
            }
        )

    return predict_mod.Cleaners(
        text=clean_text, image=clean_images, configs={"text_clean": TextCleanConfig, "image_clean": ImageCleanConfig}
    )


def _write_params(path: Path, overrides: dict | None = None) -> None:
    params = with_overrides(default_params(), overrides or {})
    path.write_text(yaml.safe_dump({k: params[k] for k in ("text_clean", "image_clean")}, sort_keys=False))


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Trained artifacts of two fake models + their fusion, an X_test-layout CSV and an image folder."""
    for name, module in _fake_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(registry.MODELS, "fake_text", registry.ModelSpec("fake_text", "fake_text_model", "text"))
    monkeypatch.setitem(registry.MODELS, "fake_image", registry.ModelSpec("fake_image", "fake_image_model", "image"))
    monkeypatch.setattr(predict_mod, "default_cleaners", _fake_cleaners)
    models = tmp_path / "models"
    trained = default_params()  # what the models were trained with (lemmatizer: lookup)
    for name, section in (("fake_text", "text_clean"), ("fake_image", "image_clean")):
        (models / name).mkdir(parents=True)
        (models / name / "preprocessing.json").write_text(json.dumps({section: _record(trained, section)}))
    persistence.save(
        FusedModel(
            "soft_vote",
            ["fake_text", "fake_image"],
            ["text", "image"],
            SoftVote([0.6, 0.4]),
            np.array([0.6, 0.4]),
        ),
        models / "fusion",
    )
    images = tmp_path / "images"
    images.mkdir()
    for imageid, productid in ((1, 11), (3, 33)):
        (images / f"image_{imageid}_product_{productid}.jpg").write_bytes(
            cv2.imencode(".jpg", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
        )
    x = pd.DataFrame(
        {
            "designation": ["abc", "abcd", "", ""],
            "description": ["", "", "", ""],
            "productid": [11, 22, 33, 44],
            "imageid": [1, 2, 3, 4],
        },
        index=[90000, 90001, 90002, 90003],
    )
    x.to_csv(tmp_path / "X_new.csv")
    _write_params(tmp_path / "params.yaml")
    record_outputs(tmp_path, *(p.relative_to(tmp_path) for p in sorted(models.iterdir())))  # as `dvc commit`
    return tmp_path


def _run(ws: Path, *extra: str) -> int:
    return cli.main(
        [
            "predict",
            "--input",
            str(ws / "X_new.csv"),
            "--images",
            str(ws / "images"),
            "--output",
            str(ws / "out.csv"),
            "--models",
            str(ws / "models"),
            "--params",
            str(ws / "params.yaml"),
            *extra,
        ]
    )


def test_predict_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--input", "--images", "--output", "--models", "--params", "X_test layout"):
        assert option in out


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "rakuten"
    result = subprocess.run([str(exe), "predict", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--images" in result.stdout


def test_predicts_every_row_and_degrades_to_the_available_modality(workspace):
    assert _run(workspace) == 0
    out = pd.read_csv(workspace / "out.csv", index_col=0)
    assert list(out.index) == [90000, 90001, 90002, 90003]
    assert list(out.columns) == [
        "prdtypecode",
        "label",
        "top1_code",
        "top1_proba",
        "top2_code",
        "top2_proba",
        "top3_code",
        "top3_proba",
        "inputs_used",
        "needs_review",
    ]
    assert not out["needs_review"].any()  # a fused model saved without a review threshold: nothing to review
    # both inputs: soft vote 0.6 text (class len("abc") = 3) + 0.4 image (class 5)
    assert out.loc[90000, "prdtypecode"] == CLASS_CODES[3] and out.loc[90000, "inputs_used"] == "text+image"
    assert out.loc[90000, "top2_code"] == CLASS_CODES[IMAGE_CLASS]
    # image file missing: the text model alone (renormalised), and the column says so
    assert out.loc[90001, "prdtypecode"] == CLASS_CODES[4]
    assert out.loc[90001, "top1_proba"] == pytest.approx(0.8)
    assert out.loc[90001, "inputs_used"] == "text only (image missing)"
    # empty text: the image model alone
    assert out.loc[90002, "prdtypecode"] == CLASS_CODES[IMAGE_CLASS]
    assert out.loc[90002, "top1_proba"] == pytest.approx(0.7)
    assert out.loc[90002, "inputs_used"] == "image only (text empty)"
    # neither: still a prediction, flagged
    assert out.loc[90003, "inputs_used"].startswith("none (text empty, image missing)")
    assert out["prdtypecode"].isin(CLASS_CODES).all()


def test_prints_calibrated_probabilities_and_flags_rows_to_review(workspace):
    """A fused model calibrated (temperature 2) with a review threshold of 0.25: the printed probabilities are
    the calibrated ones and needs_review flags the rows whose calibrated top probability is below 0.25."""
    from rakuten.fusion.calibration import Temperature

    persistence.save(
        FusedModel(
            "soft_vote",
            ["fake_text", "fake_image"],
            ["text", "image"],
            SoftVote([0.6, 0.4]),
            np.array([0.6, 0.4]),
            calibrator=Temperature(2.0),
            review_threshold=0.25,
        ),
        workspace / "models" / "fusion",
    )
    record_outputs(workspace, "models/fusion")
    assert _run(workspace) == 0
    out = pd.read_csv(workspace / "out.csv", index_col=0)

    def calibrated_top(raw: np.ndarray) -> float:  # temperature 2: sqrt of each probability, renormalised
        root = np.sqrt(raw)
        return float(root.max() / root.sum())

    both = 0.6 * _peaked(1, np.array([3]), 0.8)[0] + 0.4 * _peaked(1, np.array([IMAGE_CLASS]), 0.7)[0]
    text_only, image_only = _peaked(1, np.array([4]), 0.8)[0], _peaked(1, np.array([IMAGE_CLASS]), 0.7)[0]
    expected = {90000: calibrated_top(both), 90001: calibrated_top(text_only), 90002: calibrated_top(image_only)}
    for index, top in expected.items():
        assert out.loc[index, "top1_proba"] == pytest.approx(top, abs=1e-6)
    assert expected[90001] > 0.25 > expected[90002] > expected[90000]  # 0.282, 0.230, 0.192
    assert out["needs_review"].tolist() == [True, False, True, True]
    assert out.loc[90000, "prdtypecode"] == CLASS_CODES[3]  # temperature keeps the argmax


def test_cleans_as_trained_and_warns_when_params_changed_since(workspace, capsys):
    """A knob changed in params.yaml after training: one warning naming it, and the trained cleaning."""
    assert _run(workspace) == 0
    trained = pd.read_csv(workspace / "out.csv", index_col=0)
    assert " WARNING " not in capsys.readouterr().err
    _write_params(
        workspace / "params.yaml", {"text_clean.normalise.lemmatizer": "none", "text_clean.n_jobs": 1}
    )  # n_jobs: speed only, no warning
    assert _run(workspace) == 0
    pd.testing.assert_frame_equal(pd.read_csv(workspace / "out.csv", index_col=0), trained)
    warnings = [line for line in capsys.readouterr().err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1
    assert "text_clean.normalise.lemmatizer: trained 'lookup'" in warnings[0] and "now 'none'" in warnings[0]
    assert "n_jobs" not in warnings[0] and "predicting with the trained values" in warnings[0]


def test_models_trained_on_different_preprocessing_are_one_error_line(workspace, capsys, monkeypatch):
    other = _record(with_overrides(default_params(), {"text_clean.max_chars": 500}), "text_clean")
    monkeypatch.setitem(registry.MODELS, "fake_text2", registry.ModelSpec("fake_text2", "fake_text_model", "text"))
    (workspace / "models" / "fake_text2").mkdir()
    (workspace / "models" / "fake_text2" / "preprocessing.json").write_text(json.dumps({"text_clean": other}))
    persistence.save(
        FusedModel(
            "soft_vote",
            ["fake_text", "fake_text2", "fake_image"],
            ["text", "text", "image"],
            SoftVote([0.3, 0.3, 0.4]),
            np.array([0.3, 0.3, 0.4]),
        ),
        workspace / "models" / "fusion",
    )
    record_outputs(workspace, "models/fake_text2", "models/fusion")
    assert _run(workspace) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"error: {workspace / 'models' / 'fake_text2' / 'preprocessing.json'}: text_clean.max_chars = "
        f"500 but {workspace / 'models' / 'fake_text' / 'preprocessing.json'} has 10000; expected "
        "every model trained on the same preprocessing (rerun `dvc repro`)"
    )


def test_model_without_preprocessing_record_is_one_error_line(workspace, capsys):
    (workspace / "models" / "fake_image" / "preprocessing.json").unlink()
    record_outputs(workspace, "models/fake_image")  # a model trained (and recorded) without its record
    assert _run(workspace) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {workspace / 'models' / 'fake_image' / 'preprocessing.json'}: not found")


def test_missing_artifacts_are_one_error_line(workspace, capsys):
    import shutil

    shutil.rmtree(workspace / "models" / "fake_image")
    assert _run(workspace) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == f"error: {workspace / 'models' / 'fake_image'}: trained model not found; run `dvc repro fake_image`"
    )
    assert not (workspace / "out.csv").exists()


def test_bad_input_csv_is_one_error_line(workspace, capsys):
    (workspace / "X_new.csv").write_text(",designation,productid,imageid\n1,a,2,3\n")
    assert _run(workspace) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1
    assert "missing column 'description'" in err[-1]

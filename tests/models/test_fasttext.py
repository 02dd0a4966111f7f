"""Supervised fastText on the tiny catalog: quality, probabilities (numpy 2 workaround), persistence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.classes import CLASS_CODES
from rakuten.contracts.model_files import check_proba
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.models import fasttext
from tests.helpers.scoring import majority_weighted_f1, model_weighted_f1
from tests.helpers.stagerun import default_params, with_overrides
from tests.helpers.text_frames import text_model_frame


@pytest.fixture(scope="module")
def frames(tiny_split):
    frame = text_model_frame(tiny_split)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    held_out = frame[frame["split"].isin(["val", "test"])].reset_index(drop=True)
    return train, held_out


@pytest.fixture(scope="module")
def config():
    # small and fast for tests; the study's configuration otherwise
    return replace(parse_section(fasttext.FastTextConfig, default_params()["fasttext"], "fasttext"), bucket=20000)


@pytest.fixture(scope="module")
def model(frames, config):
    return fasttext.train(frames[0], None, config)


def test_fasttext_beats_the_majority_baseline_by_far(model, frames):
    train, held_out = frames
    f1, baseline = model_weighted_f1(fasttext, model, held_out), majority_weighted_f1(train, held_out)
    assert f1 >= baseline + 0.4, (f1, baseline)


def test_probability_rows_sum_to_one_over_27_classes(model, frames):
    proba = fasttext.predict_proba(model, frames[1])
    assert proba.shape == (len(frames[1]), len(CLASS_CODES))
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    check_proba(proba)
    assert (proba > 0).sum(axis=1).min() > 1  # a full distribution, not one-hot top-1


def test_probabilities_match_the_low_level_top1(model, frames):
    proba = fasttext.predict_proba(model, frames[1].head(20))
    column = model.config.text_column
    texts = [fasttext.prepare_text(t, True) for t in frames[1].head(20)[column]]
    top = [model.model.f.predict(t + "\n", 1, 0.0, "strict")[0] for t in texts]
    assert [CLASS_CODES[i] for i in proba.argmax(axis=1)] == [int(label.split("__")[-1]) for _, label in top]
    assert np.allclose(proba.max(axis=1), [p for p, _ in top], rtol=2e-3)  # only renormalised


def test_empty_and_multiline_texts_predict(model):
    frame = pd.DataFrame({model.config.text_column: ["", "ligne un\nligne deux", None]})
    check_proba(fasttext.predict_proba(model, frame))


def test_save_load_round_trip(model, frames, tmp_path):
    fasttext.save(model, tmp_path / "ft")
    loaded = fasttext.load(tmp_path / "ft")
    assert loaded.config == model.config
    assert np.allclose(fasttext.predict_proba(loaded, frames[1]), fasttext.predict_proba(model, frames[1]))


def test_single_thread_training_is_deterministic(model, frames, config):
    again = fasttext.train(frames[0], None, config)
    assert np.array_equal(fasttext.predict_proba(again, frames[1]), fasttext.predict_proba(model, frames[1]))


def test_params_are_validated_with_the_key_name():
    params = default_params()
    for key, value, message in [
        ("fasttext.lr", 0, "fasttext.lr = 0"),
        ("fasttext.loss", "ns", "fasttext.loss"),
        ("fasttext.text_column", "designation", "fasttext.text_column"),
    ]:
        with pytest.raises(PipelineError, match=message):
            parse_section(fasttext.FastTextConfig, with_overrides(params, {key: value})["fasttext"], "fasttext")


def test_load_missing_model_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="model.bin: not found"):
        fasttext.load(tmp_path)


def test_stage_writes_the_contract_files(tmp_path, tiny_split):
    import json

    from tests.helpers.stagerun import run_stage_script
    from tests.helpers.text_frames import write_stage_inputs

    write_stage_inputs(tmp_path, tiny_split, text_model_frame(tiny_split))
    result = run_stage_script("fasttext", tmp_path, {"fasttext.epoch": 20, "fasttext.bucket": 20000})
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "reports/metrics/fasttext.json").read_text())
    assert set(metrics) >= {"val", "test"}
    probs = pd.read_parquet(tmp_path / "reports/probs/fasttext.parquet")
    assert set(probs["split"]) == {"val", "test", "official_test"}
    assert np.allclose(probs.filter(like="p_").sum(axis=1), 1.0, atol=1e-4)
    assert (tmp_path / "models/fasttext/model.bin").is_file()

"""The fused model's calibration and review threshold, and fused models saved before they existed."""

from __future__ import annotations

import re

import joblib
import numpy as np
import pytest

from rakuten.contracts.classes import N_CLASSES
from rakuten.fusion import persistence
from rakuten.fusion.calibration import Temperature
from rakuten.fusion.model import FusedModel, availability
from rakuten.fusion.weights import SoftVote

K = N_CLASSES


def _peaked(classes, mass: float) -> np.ndarray:
    p = np.full((len(classes), K), (1 - mass) / (K - 1))
    p[np.arange(len(classes)), classes] = mass
    return p


def _model(**extra) -> FusedModel:
    return FusedModel("soft_vote", ["t", "i"], ["text", "image"], SoftVote([0.5, 0.5]), np.array([0.6, 0.4]), **extra)


def _power(p: np.ndarray, t: float) -> np.ndarray:
    """Temperature scaling written independently: p^(1/T), renormalised."""
    q = p ** (1 / t)
    return q / q.sum(axis=1, keepdims=True)


def test_predict_proba_calibrates_after_the_missing_input_fallback():
    text, image = _peaked([1, 2, 3], 0.8), _peaked([4, 4, 3], 0.6)
    available = availability(["text", "image"], np.array([True, True, False]), np.array([True, False, True]))
    model = _model(calibrator=Temperature(2.0))
    raw = model.raw_proba([text, image], available)
    assert np.allclose(raw[1], text[1]) and np.allclose(raw[2], image[2])  # the fallback, uncalibrated
    assert np.allclose(raw[0], 0.5 * text[0] + 0.5 * image[0])
    got = model.predict_proba([text, image], available)
    assert np.allclose(got, _power(raw, 2.0), atol=1e-12)
    assert np.allclose(got.sum(1), 1.0) and np.array_equal(got.argmax(1), raw.argmax(1))
    assert np.array_equal(_model().predict_proba([text, image], available), raw)  # no calibrator: as fused


def test_needs_review_is_a_top_probability_below_the_threshold():
    proba = _peaked([0, 1, 2], 0.5)
    proba[1] = _peaked([1], 0.7)[0]
    proba[2] = _peaked([2], 0.9)[0]
    assert _model(review_threshold=0.7).needs_review(proba).tolist() == [True, False, False]  # 0.7 is accepted
    assert _model(review_threshold=0.95).needs_review(proba).tolist() == [True, True, True]
    assert _model().needs_review(proba).tolist() == [False, False, False]  # no threshold: nothing to review
    assert _model(review_threshold=0.7).needs_review(proba).dtype == bool


def test_summary_names_the_calibration_and_the_threshold():
    plain = _model().summary()
    assert plain["calibration"] == {"method": "none", "params": {}} and plain["review_threshold"] is None
    calibrated = _model(calibrator=Temperature(1.5), review_threshold=0.87654321).summary()
    assert calibrated["calibration"] == {"method": "temperature", "params": {"temperature": 1.5}}
    assert calibrated["review_threshold"] == 0.876543


def test_saved_calibrator_keeps_the_pickled_module_name(tmp_path):
    persistence.save(_model(calibrator=Temperature(1.5), review_threshold=0.9), tmp_path / "fusion")
    data = (tmp_path / "fusion" / "fusion.joblib").read_bytes()
    assert set(re.findall(rb"rakuten[\w.]*", data)) == {b"rakuten.fusion"}
    loaded = persistence.load(tmp_path / "fusion")
    assert isinstance(loaded.calibrator, Temperature) and loaded.calibrator.temperature == 1.5
    assert loaded.review_threshold == 0.9


def test_a_model_saved_before_calibration_loads_uncalibrated_without_review(tmp_path):
    """A pickle of the former FusedModel: its state has neither ``calibrator`` nor ``review_threshold``."""
    old = _model()
    del old.__dict__["calibrator"], old.__dict__["review_threshold"]
    (tmp_path / "fusion").mkdir()
    joblib.dump(old, tmp_path / "fusion" / persistence.MODEL_FILE)
    assert b"calibrator" not in (tmp_path / "fusion" / persistence.MODEL_FILE).read_bytes()
    loaded = persistence.load(tmp_path / "fusion")
    assert "calibrator" not in vars(loaded) and "review_threshold" not in vars(loaded)
    text, image = _peaked([1, 2], 0.8), _peaked([4, 2], 0.6)
    assert np.array_equal(loaded.predict_proba([text, image]), SoftVote([0.5, 0.5]).predict_proba([text, image]))
    assert loaded.needs_review(loaded.predict_proba([text, image])).tolist() == [False, False]
    assert loaded.summary()["calibration"]["method"] == "none" and loaded.summary()["review_threshold"] is None


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_needs_review_accepts_lists(threshold):
    assert _model(review_threshold=threshold).needs_review([[0.6, 0.4], [0.3, 0.7]]).tolist() == [False, False]

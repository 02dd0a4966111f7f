"""Calibration of the fused probabilities: known answers on synthetic data, cross-fitting, no test label."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from rakuten.contracts.calibration_metrics import ece, nll
from rakuten.contracts.classes import N_CLASSES, PROBA_COLUMNS, codes_to_indices
from rakuten.fusion import calibration, fusion, selection
from rakuten.fusion.calibration import Identity, Temperature, VectorScaling
from rakuten.fusion.probs import normalise_rows, softmax
from tests.helpers.fusion_fakes import ALL, FIRST_HALF, SECOND_HALF, make_tables, small_config

K = N_CLASSES
MODALITIES = ["text", "image", "text"]


def sampled(n: int, seed: int, scale: float = 1.0, shift: np.ndarray | None = None):
    """Labels drawn from softmax(z) (so softmax(z) is calibrated) and the probabilities a miscalibrated model
    shows: softmax(scale * z + shift). ``scale`` 2 is over-confident: temperature 2 undoes it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, K))
    truth = softmax(z)
    y = np.minimum((np.cumsum(truth, axis=1) < rng.random((n, 1))).sum(axis=1), K - 1)
    shown = softmax(scale * z + (0.0 if shift is None else shift))
    return shown, y


@pytest.mark.parametrize("true_t", [2.0, 0.5])
def test_temperature_recovers_a_known_temperature(true_t):
    shown, y = sampled(6000, seed=1, scale=true_t)
    fitted = Temperature().fit(shown, y)
    assert fitted.temperature == pytest.approx(true_t, rel=0.06)
    assert fitted.params() == {"temperature": round(fitted.temperature, 6)}


def test_temperature_lowers_ece_on_held_out_rows_and_keeps_the_argmax():
    shown, y = sampled(4000, seed=2, scale=2.5)
    fit_rows, held = slice(0, 2000), slice(2000, None)
    fitted = Temperature().fit(shown[fit_rows], y[fit_rows])
    after = fitted.transform(shown[held])
    assert ece(after, y[held]) < 0.5 * ece(shown[held], y[held])
    assert nll(after, y[held]) < nll(shown[held], y[held])
    assert np.array_equal(after.argmax(1), shown[held].argmax(1))
    assert np.allclose(after.sum(1), 1.0)


def test_vector_scaling_undoes_a_per_class_bias_that_temperature_cannot():
    shift = np.zeros(K)
    shift[[0, 1, 2]] = [2.0, -1.5, 1.0]
    shown, y = sampled(6000, seed=3, shift=shift)
    fit_rows, held = slice(0, 4000), slice(4000, None)
    vector = VectorScaling().fit(shown[fit_rows], y[fit_rows])
    temperature = Temperature().fit(shown[fit_rows], y[fit_rows])
    bias = (vector.bias - vector.bias.mean())[[0, 1, 2]]  # softmax ignores a shift common to every class
    undo = -(shift - shift.mean())[[0, 1, 2]]
    assert (np.sign(bias) == np.sign(undo)).all() and (np.abs(bias) > 0.5 * np.abs(undo)).all()  # shrunk, not lost
    assert np.abs(vector.scale - 1.0).max() < 0.3
    assert nll(vector.transform(shown[held]), y[held]) < nll(temperature.transform(shown[held]), y[held]) - 0.02
    params = vector.params()
    assert set(params) == {"scale", "bias"} and len(params["scale"]) == K and "10" in params["bias"]


def test_identity_changes_nothing_and_fits_are_deterministic():
    shown, y = sampled(500, seed=4, scale=1.7)
    assert np.array_equal(Identity().fit(shown, y).transform(shown), shown)
    assert Identity().params() == {}
    for cls in (Temperature, VectorScaling):
        a, b = cls().fit(shown, y), cls().fit(shown, y)
        assert a.params() == b.params()
        assert np.array_equal(a.transform(shown), b.transform(shown))


def test_cross_fit_transforms_each_fold_with_a_calibrator_fitted_on_the_others():
    shown, y = sampled(600, seed=5, scale=2.0)
    splits = selection.cv_splits(y, None, 3, 0)
    got = calibration.cross_fit("temperature", shown, y, splits)
    for train_idx, held_idx in splits:
        expected = Temperature().fit(shown[train_idx], y[train_idx]).transform(shown[held_idx])
        assert np.array_equal(got[held_idx], expected)
    in_sample = Temperature().fit(shown, y).transform(shown)
    assert not np.allclose(got, in_sample, atol=1e-6)


def test_choose_keeps_the_lowest_out_of_fold_log_loss_or_the_forced_one():
    shift = np.zeros(K)
    shift[[3, 4]] = [2.5, -2.0]
    shown, y = sampled(1500, seed=6, shift=shift)
    splits = selection.cv_splits(y, None, 5, 0)
    auto = calibration.choose(shown, y, splits)
    assert list(auto.candidates) == list(calibration.METHODS)
    assert auto.calibrator.method == "vector_scaling"  # a bias per class: only vector scaling can undo it
    assert auto.candidates["vector_scaling"]["nll"] == min(c["nll"] for c in auto.candidates.values())
    assert np.array_equal(auto.oof, calibration.cross_fit("vector_scaling", shown, y, splits))
    forced = calibration.choose(shown, y, splits, "temperature")
    assert forced.calibrator.method == "temperature" and forced.candidates == auto.candidates
    report = forced.report()
    assert report["chosen"] == "temperature" and report["selection"] == "forced by fusion.calibration"
    assert report["params"] == forced.calibrator.params()
    assert [c["method"] for c in report["candidates"]] == list(calibration.METHODS)
    assert set(report["candidates"][0]) == {"method", "val_oof_nll", "val_oof_ece", "val_oof_brier"}
    assert auto.report()["selection"] == "lowest out-of-fold val NLL"
    with pytest.raises(ValueError, match="calibration 'platt'"):
        calibration.choose(shown, y, splits, "platt")


def test_fitting_stays_fast_and_linear_in_rows():
    """500 val rows x 27 classes: every candidate cross-fitted on 5 folds and refitted, well under a second."""
    times = {}
    for n in (500, 2000):
        shown, y = sampled(n, seed=7, scale=2.0)
        splits = selection.cv_splits(y, None, 5, 0)
        start = time.perf_counter()
        calibration.choose(shown, y, splits)
        times[n] = time.perf_counter() - start
    assert times[500] < 1.0, times
    assert times[2000] < 4 * times[500] * 2.5 + 0.5, times  # linear, with room for a noisy shared machine


# --------------------------------------------------------------------------- inside the fusion stage


def _tables():
    tables, _ = make_tables(
        {"tfidf_svm": FIRST_HALF, "resnet50": SECOND_HALF, "camembert": ALL}, per_class=6, strength=2.0
    )
    return tables


@pytest.fixture(scope="module")
def fused():
    tables = _tables()
    cfg = small_config(list(tables))
    return tables, cfg, fusion.fuse_tables(tables, MODALITIES, cfg)


def _proba(table, split=None):
    part = table if split is None else table[table["split"] == split]
    return part[list(PROBA_COLUMNS)].to_numpy(np.float64)


def _labels(table, split):
    return codes_to_indices(table.loc[table["split"] == split, "prdtypecode"].to_numpy(np.int64))


def test_val_rows_hold_cross_fitted_calibrated_probabilities(fused):
    tables, cfg, result = fused
    raw_val, y_val = _proba(result.uncalibrated, "val"), _labels(result.uncalibrated, "val")
    table_val = _proba(result.table, "val")
    splits = selection.cv_splits(y_val, None, cfg.cv_folds, cfg.seed)
    method = result.calibration["chosen"]
    assert method != "none"
    cross_fitted = normalise_rows(calibration.cross_fit(method, raw_val, y_val, splits))
    assert np.allclose(table_val, cross_fitted, atol=1e-5)
    in_sample = result.model.calibrator.transform(raw_val)  # what a leaky table would hold
    assert np.abs(table_val - in_sample).max() > 1e-3
    # every other row: the calibrator fitted on all val rows, applied to the uncalibrated fusion
    for split in ("test", "official_test"):
        expected = normalise_rows(result.model.calibrator.transform(_proba(result.uncalibrated, split)))
        assert np.allclose(_proba(result.table, split), expected, atol=1e-5)


def test_no_test_label_reaches_the_calibrator_or_the_threshold(monkeypatch):
    """Every calibrator fit sees validation rows only (matched on their probabilities and labels);
    scrambling the test labels changes nothing calibrated; changing validation labels does."""
    tables = _tables()
    cfg = small_config(list(tables))
    fits = []
    for cls in calibration.CALIBRATORS:
        real = cls.fit

        def spy(self, proba, y, real=real):
            fits.append((np.array(proba, dtype=np.float64), np.asarray(y).copy()))
            return real(self, proba, y)

        monkeypatch.setattr(cls, "fit", spy)
    clean = fusion.fuse_tables(tables, MODALITIES, cfg)

    raw_val, y_val = _proba(clean.uncalibrated, "val"), _labels(clean.uncalibrated, "val")
    n_val = len(y_val)
    # three candidates x (3 folds + the final fit of the chosen one)
    assert sorted(len(y) for _, y in fits) == sorted([n_val] + [n_val - len(h) for h in _held(y_val, cfg)] * 3)
    for proba, y in fits:
        for row, label in zip(proba, y):
            match = np.flatnonzero(np.abs(raw_val - row).max(axis=1) < 1e-6)
            assert len(match) == 1 and y_val[match[0]] == label, "a calibrator was fitted on a non-validation row"

    scrambled = {}
    for name, t in tables.items():
        t = t.copy()
        test = t["split"] == "test"
        t.loc[test, "prdtypecode"] = t.loc[test, "prdtypecode"].to_numpy()[::-1]
        scrambled[name] = t
    dirty = fusion.fuse_tables(scrambled, MODALITIES, cfg)
    assert dirty.calibration == clean.calibration and dirty.review == clean.review
    assert dirty.model.summary() == clean.model.summary()
    assert np.array_equal(_proba(dirty.table), _proba(clean.table))
    assert np.array_equal(_proba(dirty.uncalibrated), _proba(clean.uncalibrated))

    relabelled = {}
    rng = np.random.default_rng(0)
    for name, t in tables.items():
        t = t.copy()
        val = np.flatnonzero((t["split"] == "val").to_numpy())
        moved = rng.choice(val, size=len(val) // 3, replace=False)
        t.loc[t.index[moved], "prdtypecode"] = t.loc[t.index[moved], "prdtypecode"].to_numpy()[::-1]
        relabelled[name] = t
    other = fusion.fuse_tables(relabelled, MODALITIES, cfg)
    assert other.calibration["params"] != clean.calibration["params"]
    assert other.review != clean.review
    assert not np.allclose(_proba(other.table, "val"), _proba(clean.table, "val"))
    assert not np.allclose(_proba(other.table, "test"), _proba(clean.table, "test"))


def _held(y, cfg):
    return [held for _, held in selection.cv_splits(y, None, cfg.cv_folds, cfg.seed)]


@pytest.mark.param_effect("fusion.calibration")
def test_calibration_knob_sets_the_method(fused):
    tables, cfg, auto = fused
    assert auto.calibration["selection"] == "lowest out-of-fold val NLL"
    results = {m: fusion.fuse_tables(tables, MODALITIES, replace(cfg, calibration=m)) for m in calibration.METHODS}
    for method, result in results.items():
        assert result.model.calibrator.method == result.calibration["chosen"] == method
        assert result.calibration["selection"] == "forced by fusion.calibration"
        assert result.calibration["candidates"] == auto.calibration["candidates"]  # scored the same, kept another
    assert np.allclose(_proba(results["none"].table), _proba(results["none"].uncalibrated), atol=1e-6)
    assert not np.allclose(_proba(results["temperature"].table), _proba(results["none"].table), atol=1e-3)
    assert not np.allclose(_proba(results["vector_scaling"].table), _proba(results["temperature"].table), atol=1e-3)
    assert results["temperature"].model.summary()["calibration"] == {
        "method": "temperature",
        "params": results["temperature"].calibration["params"],
    }

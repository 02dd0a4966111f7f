"""ResNet image model on the tiny catalog: contract, learning, best epoch, early stopping, row
accounting, determinism, persistence. Tiny configs: resnet18 at 32 px, one CPU thread."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from rakuten.contracts.classes import N_CLASSES
from rakuten.contracts.model_files import check_proba
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.models.resnet50 import model as R
from rakuten.models.resnet50.config import Augment
from rakuten.models.resnet50.data import build_transform
from rakuten.models.resnet50.frame import QUALITY_COLUMNS, usable_train_rows
from rakuten.runtime import training
from tests.helpers.deep_frames import model_frame, parts
from tests.helpers.row_invariance import assert_row_invariant
from tests.helpers.scoring import majority_weighted_f1, model_weighted_f1
from tests.helpers.stagerun import default_params

TINY = R.ResnetConfig(eval_batch_size=64, num_threads=1, seed=0, device="cpu").with_active(
    arch="resnet18",
    weights="none",
    image_size=32,
    max_train_rows=0,
    epochs=3,
    batch_size=32,
    learning_rate=3e-3,
    weight_decay=1e-4,
    patience=5,
)


@pytest.fixture(scope="module")
def frames(tiny_split):
    return parts(model_frame(tiny_split))


@pytest.fixture(scope="module")
def trained(frames, tmp_path_factory):
    train, val, _ = frames
    live_dir = tmp_path_factory.mktemp("live") / "resnet50"
    return R.train(train, val, TINY, live_dir=live_dir), live_dir


def _f1(model, rows: pd.DataFrame) -> float:
    return model_weighted_f1(R, model, rows)


def test_predictions_have_the_contract_shape_and_sum_to_one(trained, tiny_split):
    model, _ = trained
    rows = model_frame(tiny_split)
    rows = rows[rows["split"].isin(["val", "test", "official_test"])].reset_index(drop=True)
    proba = R.predict_proba(model, rows)
    assert proba.shape == (len(rows), N_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    check_proba(proba)


def test_beats_the_majority_class_baseline(trained, frames):
    model, _ = trained
    train, _, test = frames
    assert _f1(model, test) > majority_weighted_f1(train, test) + 0.05


def test_keeps_the_best_epoch_and_logs_dvclive_curves(trained, frames):
    model, live_dir = trained
    _, val, _ = frames
    best = max(h["weighted_f1"] for h in model.history)
    assert _f1(model, val) == pytest.approx(best, abs=1e-6)
    assert model.rows["best_epoch"] == max(model.history, key=lambda h: h["weighted_f1"])["epoch"]
    curves = live_dir / "plots" / "metrics"
    for name in ("val/weighted_f1.tsv", "val/loss.tsv", "train/loss.tsv"):
        assert len(pd.read_csv(curves / name, sep="\t")) == model.rows["epochs_run"]


def test_save_load_round_trip_gives_the_same_probabilities(trained, frames, tmp_path):
    model, _ = trained
    _, _, test = frames
    R.save(model, tmp_path / "resnet50")
    again = R.load(tmp_path / "resnet50")
    np.testing.assert_allclose(R.predict_proba(again, test), R.predict_proba(model, test), atol=1e-6)
    assert again.config == model.config and again.history == model.history


def test_same_seed_same_metrics_on_cpu(frames):
    train, val, test = frames
    short = TINY.with_active(epochs=1, max_train_rows=100)
    a, b = R.train(train, val, short), R.train(train, val, short)
    assert a.history == b.history
    np.testing.assert_array_equal(R.predict_proba(a, test), R.predict_proba(b, test))


@pytest.mark.param_effect("resnet50.demo.patience")
def test_early_stopping_when_val_f1_stops_improving(frames, monkeypatch):
    train, val, _ = frames
    flat = {"weighted_f1": 0.5, "macro_f1": 0.5, "accuracy": 0.5}  # val F1 never improves after epoch 1
    monkeypatch.setattr(training, "scores", lambda y_true, y_pred: dict(flat))
    model = R.train(train, val, TINY.with_active(epochs=5, patience=2, max_train_rows=60))
    assert model.rows["epochs_run"] == 3 and model.rows["best_epoch"] == 1


def test_sampler_rebalancing_and_sample_weights_train(frames):
    train, val, test = frames
    train = train.assign(sample_weight=np.where(np.arange(len(train)) % 2 == 0, 1.0, 0.5))
    model = R.train(train, val, replace(TINY.with_active(epochs=1, max_train_rows=60), rebalance="sampler"))
    check_proba(R.predict_proba(model, test))


def test_rows_left_out_of_training_are_counted(frames):
    train, _, _ = frames
    train = train.copy()
    train.loc[:9, "keep_for_train"] = False
    train.loc[10:14, "readable"] = False
    usable, rows = usable_train_rows(train, TINY.with_active(max_train_rows=200))
    assert rows["dropped_keep_for_train_false"] == 10 and rows["dropped_unreadable"] == 5
    assert rows["train_rows_used"] == len(usable) <= 200
    assert rows["train_rows"] - 15 - rows["dropped_max_train_rows"] == rows["train_rows_used"]
    assert not set(train.loc[:14, "row_id"]) & set(usable["row_id"])


def test_missing_image_file_names_the_row(frames):
    train, val, _ = frames
    broken = train.copy()
    broken.loc[3, "clean_path"] = "/nonexistent/x.jpg"
    with pytest.raises(PipelineError, match=f"row_id {broken.loc[3, 'row_id']}, column clean_path"):
        R.train(broken, val, TINY.with_active(epochs=1))


def test_transforms_give_normalised_tensors_of_the_configured_size(frames):
    from PIL import Image

    path = frames[0]["clean_path"].iloc[0]
    img = Image.open(path).convert("RGB")
    torch.manual_seed(0)
    x = build_transform(40, Augment())(img)
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32
    e1, e2 = build_transform(40, None)(img), build_transform(40, None)(img)
    assert torch.equal(e1, e2)


def test_load_image_frame_joins_and_checks_rows(tmp_path, tiny_split):
    frame = model_frame(tiny_split)
    frame[["row_id", "prdtypecode"]].to_parquet(tmp_path / "catalog.parquet")
    frame[["row_id", "split"]].to_parquet(tmp_path / "split.parquet")
    frame[list(QUALITY_COLUMNS)].to_parquet(tmp_path / "quality.parquet")
    joined = R.load_image_frame(tmp_path / "catalog.parquet", tmp_path / "split.parquet", tmp_path / "quality.parquet")
    assert len(joined) == len(frame) and set(QUALITY_COLUMNS) <= set(joined.columns)
    frame[list(QUALITY_COLUMNS)].iloc[1:].to_parquet(tmp_path / "quality.parquet")
    with pytest.raises(PipelineError, match=f"no row for row_id {frame['row_id'].iloc[0]}"):
        R.load_image_frame(tmp_path / "catalog.parquet", tmp_path / "split.parquet", tmp_path / "quality.parquet")


def test_default_params_parse_and_both_profiles_are_complete():
    section = default_params()["resnet50"]
    demo = parse_section(R.ResnetConfig, section, "resnet50")
    assert demo.profile == "demo" and demo.weights == "none"
    full = parse_section(R.ResnetConfig, {**section, "profile": "full"}, "resnet50")
    assert full.arch == "resnet50" and full.weights == "imagenet" and full.image_size == 224


@pytest.mark.parametrize(
    "key, value",
    [("rebalance", "smote"), ("augment", {"hflip": 2.0}), ("demo", {"arch": "not_a_model"}), ("num_workers", -1)],
)
def test_bad_params_name_the_key(key, value):
    section = default_params()["resnet50"]
    merged = {**section, key: {**section[key], **value} if isinstance(value, dict) else value}
    with pytest.raises(PipelineError) as err:
        parse_section(R.ResnetConfig, merged, "resnet50")
    assert f"resnet50.{key}" in str(err.value) and "\n" not in str(err.value)


def test_scoring_on_every_core_gives_the_one_thread_bits_and_the_epoch_pass_the_final_ones(trained, tiny_split):
    """The stage trains on resnet50.num_threads but scores (val each epoch, the final predictions) on every
    core: images go one by one through the convolutions and the head row by row, so the thread count moves
    no bit, and an epoch's val logits are the bits the saved model's predictions give."""
    from rakuten.models.resnet50.inference import _eval_rows, batch_logits
    from rakuten.runtime.torch_setup import softmax_proba, threads

    model, _ = trained
    rows = model_frame(tiny_split)
    rows = rows[rows["split"].isin(["val", "test"])].reset_index(drop=True).iloc[:40]
    with threads(1):
        one = R.predict_and_embed(model, rows)
    with threads(4):  # more threads than cores: still a different split of the work
        many = R.predict_and_embed(model, rows)
        loader, runtime = _eval_rows(model, rows)
        epoch = batch_logits(model.net, loader, runtime, "val", torch.contiguous_format)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_array_equal(softmax_proba(epoch), one[0])


def test_a_rows_outputs_do_not_depend_on_the_rows_beside_it(trained, tiny_split):
    """Chunks, single rows and a reversed order give the same bits (predict streams, the service batches);
    one pass gives both outputs, equal to the separate calls. The batched head is what broke it: a
    (batch x features) product rounds rows differently with the batch's size."""
    from rakuten.models.resnet50.inference import row_logits

    model, _ = trained
    rows = model_frame(tiny_split)
    rows = rows[rows["split"].isin(["val", "test"])].reset_index(drop=True).iloc[:40]
    proba = assert_row_invariant(lambda f: R.predict_and_embed(model, f)[0], rows)
    features = assert_row_invariant(lambda f: R.predict_and_embed(model, f)[1], rows)
    np.testing.assert_array_equal(R.predict_proba(model, rows), proba)
    np.testing.assert_array_equal(R.embed_images(model, rows), features)
    head = model.net.fc
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((300, head.in_features), dtype=np.float32))
    with torch.inference_mode():  # the batched product is not row-invariant: why the head runs row by row
        assert not torch.equal(row_logits(head, x, row_invariant=False), row_logits(head, x, row_invariant=True))

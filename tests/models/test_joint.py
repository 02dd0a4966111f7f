"""The joint text + image head on cached embeddings, the embed stage's library, and their wiring
(registry, fusion availability, `rakuten predict`).

Fast: the embeddings are synthetic (class centroids + noise on the tiny catalog's rows), the encoders
are stubs; the real encoders run in the slow DVC test (tests/integration/test_pipeline_dvc.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rakuten.contracts import embeddings, registry
from rakuten.contracts.classes import N_CLASSES, codes_to_indices
from rakuten.core.errors import PipelineError
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.model import FusedModel, availability
from rakuten.fusion.probs import normalise_rows
from rakuten.fusion.weights import SoftVote
from rakuten.models import embed, joint
from tests.helpers.deep_frames import parts
from tests.helpers.row_invariance import assert_row_invariant
from tests.helpers.scoring import majority_weighted_f1, proba_weighted_f1
from tests.helpers.stagerun import error_lines, record_outputs, run_stage_script

TEXT_DIM, IMAGE_DIM = 24, 16
FAST = joint.JointConfig(
    hidden=32, epochs=25, batch_size=64, learning_rate=0.005, patience=25, device="cpu", num_threads=1
)


def synthetic_embeddings(
    rows: pd.DataFrame, seed: int = 0, text_missing: float = 0.05, image_missing: float = 0.05
) -> pd.DataFrame:
    """``rows`` plus embedding columns: class centroid + noise (text clearer than image), some inputs missing
    (zeroed embedding, flag false), official test rows of a random class."""
    rng = np.random.default_rng(seed)
    codes = rows["prdtypecode"]
    y = np.where(
        codes.isna(),
        rng.integers(0, N_CLASSES, len(rows)),
        codes_to_indices(codes.fillna(codes.dropna().iloc[0]).to_numpy(dtype=np.int64)),
    )
    text = rng.normal(0, 1, (N_CLASSES, TEXT_DIM))[y] + rng.normal(0, 1.2, (len(rows), TEXT_DIM))
    image = rng.normal(0, 1, (N_CLASSES, IMAGE_DIM))[y] + rng.normal(0, 1.6, (len(rows), IMAGE_DIM))
    text_ok, image_ok = rng.random(len(rows)) >= text_missing, rng.random(len(rows)) >= image_missing
    text[~text_ok], image[~image_ok] = 0.0, 0.0
    table = embeddings.embeddings_table(rows["row_id"].to_numpy(), text, image, text_ok, image_ok)
    return embeddings.joint_frame(rows[["row_id", "split", "prdtypecode"]], table)


@pytest.fixture(scope="module")
def frame(tiny_split) -> pd.DataFrame:
    return synthetic_embeddings(tiny_split)


@pytest.fixture(scope="module")
def trained(frame):
    train, val, _ = parts(frame)
    return joint.train(train, val, FAST)


def _proba(cfg: joint.JointConfig, frame: pd.DataFrame) -> np.ndarray:
    train, val, test = parts(frame)
    return joint.predict_proba(joint.train(train, val, cfg), test)


# ------------------------------------------------------------------------------------------ the head


def test_head_beats_the_majority_baseline(frame, trained):
    train, val, test = parts(frame)
    proba = joint.predict_proba(trained, test)
    assert proba.shape == (len(test), N_CLASSES)
    assert proba_weighted_f1(test, proba) > majority_weighted_f1(train, test) + 0.3
    assert trained.rows["best_epoch"] == max(trained.history, key=lambda h: h["weighted_f1"])["epoch"]


def test_stage_outputs_follow_the_contract(frame, tmp_path, monkeypatch):
    from rakuten.contracts.model_files import read_probs
    from rakuten.models.runner import fit_and_report

    monkeypatch.chdir(tmp_path)
    _, metrics = fit_and_report("joint", joint, FAST, frame, encoders={"text": "camembert", "image": "resnet50"})
    table = read_probs("joint")  # validates columns and rows summing to 1
    assert set(table["split"]) == {"val", "test", "official_test"}
    assert np.allclose(table.filter(like="p_").to_numpy().sum(axis=1), 1.0, atol=1e-5)
    assert set(metrics) >= {"val", "test", "train_rows"}
    assert (tmp_path / "reports/per_class/joint.csv").is_file()
    assert (tmp_path / "models/joint/weights.pt").is_file() and (tmp_path / "models/joint/joint.json").is_file()


def test_save_load_round_trip_is_identical(frame, trained, tmp_path):
    _, _, test = parts(frame)
    joint.save(trained, tmp_path / "joint")
    loaded = joint.load(tmp_path / "joint")
    assert loaded.config == trained.config and loaded.dims == trained.dims == {"text": TEXT_DIM, "image": IMAGE_DIM}
    assert joint.encoders(loaded) == {"text": "camembert", "image": "resnet50"}
    assert np.array_equal(joint.predict_proba(loaded, test), joint.predict_proba(trained, test))


def test_missing_model_and_other_widths_are_one_line(frame, trained, tmp_path):
    with pytest.raises(PipelineError, match=r"joint\.json: not found; .*dvc repro joint"):
        joint.load(tmp_path / "nothing")
    _, _, test = parts(frame)
    wider = test.copy()
    wider[embeddings.TEXT] = [np.zeros(TEXT_DIM + 1, np.float32)] * len(wider)
    with pytest.raises(PipelineError, match=r"text_embedding: 25 dims, expected 24 .*dvc repro embed joint"):
        joint.predict_proba(trained, wider)
    with pytest.raises(PipelineError, match=r"missing column image_embedding.*dvc repro embed"):
        joint.predict_proba(trained, test.drop(columns=embeddings.IMAGE))


@pytest.mark.param_effect("joint.seed")
def test_same_seed_same_probabilities(frame):
    first, again = _proba(FAST, frame), _proba(FAST, frame)
    assert np.array_equal(first, again)
    assert not np.allclose(_proba(replace(FAST, seed=7), frame), first)


def test_missing_embeddings_file_is_one_line(tmp_path):
    result = run_stage_script("joint", tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == ["error: data/features/embeddings.parquet: file not found (run `dvc repro embed`)"]


def test_a_row_without_embeddings_names_the_row(frame):
    rows = frame[["row_id", "split", "prdtypecode"]]
    table = frame[list(embeddings.COLUMNS)].iloc[1:]
    with pytest.raises(PipelineError, match=rf"no row for row_id {rows['row_id'].iloc[0]}; .*dvc repro embed"):
        embeddings.joint_frame(rows, table)


# ------------------------------------------------------------------------------------ param effects


@pytest.mark.param_effect("joint.hidden", "joint.fusion")
def test_hidden_and_fusion_shape_the_head(frame):
    base = joint.train(*parts(frame)[:2], replace(FAST, epochs=2))
    assert base.net.text[1].out_features == 32 and base.net.gate is None
    wide = joint.train(*parts(frame)[:2], replace(FAST, epochs=2, hidden=48))
    assert wide.net.text[1].out_features == wide.net.image[1].out_features == 48
    gated = joint.train(*parts(frame)[:2], replace(FAST, epochs=2, fusion="gated"))
    assert isinstance(gated.net.gate, torch.nn.Linear) and gated.net.mlp[1].in_features == 32
    assert base.net.mlp[1].in_features == 64  # concat: text + image projections
    test = parts(frame)[2]
    assert not np.allclose(joint.predict_proba(gated, test), joint.predict_proba(base, test))
    gated_proba = joint.predict_proba(gated, test)
    assert np.allclose(gated_proba.sum(axis=1), 1.0)


@pytest.mark.param_effect(
    "joint.dropout", "joint.batch_size", "joint.learning_rate", "joint.weight_decay", "joint.class_weighting"
)
def test_training_knobs_change_the_model(frame):
    cfg = replace(FAST, epochs=4, patience=4)
    base = _proba(cfg, frame)
    for change in (
        {"dropout": 0.5},
        {"batch_size": 32},
        {"learning_rate": 0.02},
        {"weight_decay": 0.5},
        {"class_weighting": "balanced"},
    ):
        assert not np.allclose(_proba(replace(cfg, **change), frame), base, atol=1e-6), change


@pytest.mark.param_effect("joint.epochs", "joint.patience")
def test_epochs_and_patience_bound_the_training(frame):
    train, val, _ = parts(frame)
    assert len(joint.train(train, val, replace(FAST, epochs=3)).history) == 3
    patient = joint.train(train, val, replace(FAST, epochs=40, patience=40, learning_rate=0.05))
    hasty = joint.train(train, val, replace(FAST, epochs=40, patience=1, learning_rate=0.05))
    assert len(patient.history) == 40 and len(hasty.history) < 40
    assert hasty.rows["epochs_run"] == len(hasty.history)


@pytest.mark.param_effect("joint.modality_dropout")
def test_modality_dropout_zeroes_one_modality_of_complete_rows(frame):
    inputs = joint.frame_inputs(frame)
    gen = torch.Generator().manual_seed(0)
    kept = joint.drop_modality(inputs, 0.0, gen)
    assert torch.equal(kept.text_mask, inputs.text_mask) and torch.equal(kept.image_mask, inputs.image_mask)
    dropped = joint.drop_modality(inputs, 1.0, gen)
    complete = (inputs.text_mask * inputs.image_mask).bool()
    assert torch.all(dropped.text_mask[complete] + dropped.image_mask[complete] == 1)  # exactly one left
    assert 0.3 < float(dropped.text_mask[complete].mean()) < 0.7  # either one, even odds
    assert torch.equal(dropped.text_mask[~complete], inputs.text_mask[~complete])  # partial rows untouched
    cfg = replace(FAST, epochs=4, patience=4)
    assert not np.allclose(
        _proba(replace(cfg, modality_dropout=0.0), frame), _proba(replace(cfg, modality_dropout=0.5), frame)
    )


def test_missing_modality_is_zeroed_and_a_row_without_inputs_uses_both(frame, trained):
    row = frame[frame["split"] == "test"].iloc[[0]].copy()
    image_only = row.assign(text_ok=False)
    changed = row.assign(text_ok=False, text_embedding=[np.full(TEXT_DIM, 9.0, np.float32)])
    assert np.array_equal(joint.predict_proba(trained, image_only), joint.predict_proba(trained, changed))
    neither = row.assign(text_ok=False, image_ok=False)
    assert np.allclose(joint.predict_proba(trained, neither), joint.predict_proba(trained, row))


@pytest.mark.param_effect("joint.device", "joint.precision")
def test_device_and_precision(frame, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train, val, _ = parts(frame)
    model = joint.train(train, val, replace(FAST, epochs=1, device="auto", precision="auto"))
    assert next(model.net.parameters()).device.type == "cpu"
    with pytest.raises(PipelineError, match="no CUDA GPU"):
        joint.train(train, val, replace(FAST, device="cuda"))
    with pytest.raises(PipelineError, match="needs a CUDA GPU"):
        joint.train(train, val, replace(FAST, precision="bf16"))


# ------------------------------------------------------------------------------------ the embed stage


class StubText:
    def __init__(self, config):
        self.config = config


def _stub_encoders(monkeypatch, calls: list | None = None):
    """camembert/resnet load + embed functions replaced by deterministic stubs of the row text / path."""
    from rakuten.models.camembert import model as camembert
    from rakuten.models.resnet50 import model as resnet50

    def load(kind):
        def _load(directory):
            if calls is not None:
                calls.append((kind, Path(directory)))
            cfg = camembert.CamembertConfig() if kind == "text" else resnet50.ResnetConfig()
            return StubText(cfg)

        return _load

    def embed_texts(model, frame):
        assert model.config.eval_batch_size > 0
        seeds = frame["text_light"].astype(str).map(lambda s: sum(map(ord, s)) % 1000).to_numpy()
        return np.stack([np.random.default_rng(s).normal(size=TEXT_DIM) for s in seeds]).astype(np.float32)

    def embed_images(model, frame):
        seeds = frame["clean_path"].astype(str).map(len).to_numpy()
        return np.stack([np.random.default_rng(s).normal(size=IMAGE_DIM) for s in seeds]).astype(np.float32)

    monkeypatch.setattr(camembert, "load", load("text"))
    monkeypatch.setattr(resnet50, "load", load("image"))
    monkeypatch.setattr(camembert, "embed_texts", embed_texts, raising=False)
    monkeypatch.setattr(resnet50, "embed_images", embed_images, raising=False)


class Checked:
    """Stands for the dvc.lock records when the encoders are stubbed (no files to hash): notes what would be
    checked, and in which order (the real check: tests/core/test_integrity.py)."""

    def __init__(self):
        self.checked: list[Path] = []

    def verify(self, path) -> str:
        self.checked.append(Path(path))
        return "stub"


def _catalog_frame(tiny_split) -> pd.DataFrame:
    from tests.helpers.deep_frames import model_frame

    frame = model_frame(tiny_split)
    frame["text_empty"] = frame["text_light"].str.strip() == ""
    frame.loc[frame.index[:3], "readable"] = False
    return frame


def test_embedding_in_worker_processes_gives_the_stages_table(tiny_built_repo, monkeypatch, tmp_path):
    """embed.workers is a runtime knob: chunks of both passes shared by spawned workers (each loading and
    checking the trained encoders) give the bytes the stage wrote in one process."""
    from rakuten.core.io import write_parquet

    monkeypatch.chdir(tiny_built_repo)
    frame = embed.load_frame()
    monkeypatch.setattr(embed, "CHUNK", max(1, len(frame) // 5))  # several chunks of each pass per worker
    table = embed.embed_catalog(frame, embed.EmbedConfig(workers=2), min_pool_rows=0)
    write_parquet(table, tmp_path / "pooled.parquet")
    committed = embeddings.read_embeddings(tiny_built_repo / embeddings.EMBEDDINGS)
    for modality in ("text", "image"):
        np.testing.assert_array_equal(embeddings.matrix(table, modality), embeddings.matrix(committed, modality))
    assert (tmp_path / "pooled.parquet").read_bytes() == (tiny_built_repo / embeddings.EMBEDDINGS).read_bytes()


def test_embed_frame_covers_every_row_with_flags_and_same_bytes(tiny_split, monkeypatch, tmp_path):
    from rakuten.core.io import write_parquet

    _stub_encoders(monkeypatch)
    frame = _catalog_frame(tiny_split)
    cfg = embed.EmbedConfig()
    text_model, image_model = embed.load_encoders(cfg, "models", Checked())
    table = embed.embed_frame(frame.iloc[::-1], text_model, image_model, cfg)
    assert sorted(table["row_id"]) == sorted(frame["row_id"]) and table["row_id"].is_monotonic_increasing
    assert set(frame["split"]) == {"train", "val", "test", "official_test"}
    assert (~table["image_ok"]).sum() == 3 and table["image_embedding"].map(len).eq(IMAGE_DIM).all()
    write_parquet(table, tmp_path / "a.parquet")
    write_parquet(embed.embed_frame(frame, text_model, image_model, cfg), tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    back = embeddings.read_embeddings(tmp_path / "a.parquet")
    assert embeddings.matrix(back, "text").dtype == np.float32 and embeddings.matrix(back, "text").shape[1] == TEXT_DIM
    report = embed.report(cfg, table, frame)
    assert report["rows"] == len(frame) and report["dims"] == {"text": TEXT_DIM, "image": IMAGE_DIM}
    assert report["encoders"] == {"text": "camembert", "image": "resnet50"}


def test_wrong_embedding_shapes_are_one_line(tiny_split, monkeypatch):
    from rakuten.models.camembert import model as camembert

    _stub_encoders(monkeypatch)
    monkeypatch.setattr(camembert, "embed_texts", lambda model, frame: np.zeros((len(frame) - 1, 4)))
    frame = _catalog_frame(tiny_split)
    cfg = embed.EmbedConfig()
    with pytest.raises(PipelineError, match=r"camembert: text embeddings of shape .*one row per input row"):
        embed.embed_frame(frame, *embed.load_encoders(cfg, "models", Checked()), cfg)


@pytest.mark.param_effect("embed.text_model", "embed.image_model", "embed.eval_batch_size", "embed.num_threads")
def test_embed_knobs_choose_the_encoders_batch_and_threads(monkeypatch):
    calls: list = []
    _stub_encoders(monkeypatch, calls)
    try:
        records = Checked()
        text_model, image_model = embed.load_encoders(
            embed.EmbedConfig(eval_batch_size=7, num_threads=3), "mdl", records
        )
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(1)
    assert calls == [("text", Path("mdl/camembert")), ("image", Path("mdl/resnet50"))]
    assert records.checked == [Path("mdl/camembert"), Path("mdl/resnet50")]  # verified before loading
    assert text_model.config.eval_batch_size == image_model.config.eval_batch_size == 7
    assert embed.EmbedConfig().encoders == {"text": "camembert", "image": "resnet50"}
    from rakuten.core.config import ConfigError, check_value

    with pytest.raises(ConfigError, match=r"embed\.text_model = 'flaubert', expected one of camembert"):
        check_value(embed.EmbedConfig, "text_model", "flaubert", "embed.text_model")


# ------------------------------------------------------------------------------- registry and fusion


def test_joint_is_a_registered_multimodal_model():
    assert registry.spec("joint").modality == "multimodal" and "multimodal" in registry.MODALITIES
    module = registry.load_module("joint")
    assert all(hasattr(module, f) for f in ("train", "predict_proba", "save", "load", "encoders"))
    assert "joint" in FusionConfig().models and FusionConfig().weights["joint"] > 0


def test_fusion_availability_of_the_multimodal_modality():
    text_ok = np.array([True, True, False, False])
    image_ok = np.array([True, False, True, False])
    avail = availability(["text", "image", "multimodal"], text_ok, image_ok)
    assert avail.tolist() == [[True, True, True], [True, False, True], [False, True, True], [False, False, False]]
    model = FusedModel("soft_vote", ["joint"], ["multimodal"], SoftVote([1.0]), np.array([1.0]))
    assert model.inputs_used(text_ok, image_ok) == [
        "text+image",
        "text only (image missing)",
        "image only (text empty)",
        "none (text empty, image missing): all models on blank input",
    ]
    with pytest.raises(PipelineError, match="unknown modality 'audio'"):
        availability(["audio"], text_ok, image_ok)


def test_fusion_fallback_keeps_joint_when_one_input_is_missing():
    rng = np.random.default_rng(0)
    mats = [rng.dirichlet(np.ones(N_CLASSES), 3) for _ in range(3)]
    model = FusedModel(
        "soft_vote",
        ["tfidf_svm", "resnet50", "joint"],
        ["text", "image", "multimodal"],
        SoftVote([1, 1, 1]),
        np.array([0.2, 0.3, 0.5]),
    )
    text_ok, image_ok = np.array([True, True, False]), np.array([True, False, True])
    out = model.predict_proba(mats, availability(model.modalities, text_ok, image_ok))
    assert np.allclose(out[1], (0.2 * mats[0][1] + 0.5 * mats[2][1]) / 0.7)  # image missing: text + joint
    assert np.allclose(out[2], (0.3 * mats[1][2] + 0.5 * mats[2][2]) / 0.8)  # text empty: image + joint


# ------------------------------------------------------------------------------------ rakuten predict


def test_predict_embeds_new_rows_with_the_saved_encoders(tiny_split, trained, monkeypatch, tmp_path):
    from rakuten.serving.loaded_models import predict_frame

    calls: list = []
    _stub_encoders(monkeypatch, calls)
    frame = _catalog_frame(tiny_split)
    rows = frame[frame["split"] == "official_test"].reset_index(drop=True)
    expected_input = embed.with_embeddings(rows, tmp_path, joint.encoders(trained), Checked())
    dims = {"text": TEXT_DIM, "image": IMAGE_DIM}
    assert joint.frame_inputs(expected_input, dims).text.shape == (len(rows), TEXT_DIM)
    joint.save(trained, tmp_path / "joint")
    record_outputs(tmp_path, "joint")  # every load checks the folders against the dvc.lock holding them
    fused = FusedModel("soft_vote", ["joint"], ["multimodal"], SoftVote([1.0]), np.array([1.0]))
    with pytest.raises(PipelineError, match=r"camembert: trained model not found; run `dvc repro camembert`"):
        predict_frame(rows, tmp_path, fused)
    (tmp_path / "camembert").mkdir()
    (tmp_path / "resnet50").mkdir()
    record_outputs(tmp_path, "camembert", "resnet50")
    calls.clear()
    proba, used = predict_frame(rows, tmp_path, fused)
    assert calls == [("text", tmp_path / "camembert"), ("image", tmp_path / "resnet50")]
    direct = joint.predict_proba(trained, expected_input).astype(np.float32).astype(np.float64)
    assert np.allclose(proba, normalise_rows(direct), atol=1e-7)
    assert len(used) == len(rows)


def test_embeddings_record_copies_the_encoders_preprocessing(tmp_path):
    from rakuten.core.io import write_json

    write_json({"text_clean": {"max_chars": 10}}, tmp_path / "camembert/preprocessing.json")
    write_json({"image_clean": {"size": 64}}, tmp_path / "resnet50/preprocessing.json")
    trained = embed.encoder_preprocessing(embed.EmbedConfig(), tmp_path)
    assert trained == {"text_clean": {"max_chars": 10}, "image_clean": {"size": 64}}
    table = embeddings.embeddings_table(np.array([2, 1]), np.ones((2, 3)), np.ones((2, 5)), [True, True], [True, False])
    record = embed.record(embed.EmbedConfig(), table, trained)
    assert record["dims"] == {"text": 3, "image": 5} and record["preprocessing"] == trained
    write_json(record, tmp_path / "embeddings.json")
    assert embeddings.read_record(tmp_path / "embeddings.json") == record
    assert dataclasses.is_dataclass(embed.EmbedConfig())


def test_a_rows_probabilities_do_not_depend_on_the_rows_beside_it(frame, trained):
    """One row per pass on CPU: chunks, single rows and a reversed order give the same bits, where the
    batched head (the training's validation pass) rounds rows differently with the batch's size."""
    rows = frame.iloc[:60]
    proba = assert_row_invariant(lambda f: joint.predict_proba(trained, f), rows)
    batched = joint.softmax_proba(
        joint._logits(trained.net, joint.frame_inputs(rows, trained.dims), joint.Runtime("cpu", "fp32"))
    )
    np.testing.assert_allclose(batched, proba, rtol=0, atol=1e-6)

"""CamemBERT model module on the tiny catalog: contract, learning, best epoch, determinism, persistence.

Tiny configs (1 layer, hidden 64, 32 tokens) so every training run takes seconds on one CPU thread.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from rakuten.contracts.classes import N_CLASSES, PROBA_COLUMNS
from rakuten.contracts.model_files import check_proba, proba_frame
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.models.camembert import model as C
from rakuten.models.camembert.config import SCRATCH, ScratchArchitecture
from rakuten.models.camembert.encoder import SPECIAL_TOKENS, train_tokenizer
from rakuten.models.camembert.trainer_setup import weighted_loss
from tests.helpers.deep_frames import model_frame, parts
from tests.helpers.row_invariance import assert_row_invariant
from tests.helpers.scoring import majority_weighted_f1, model_weighted_f1
from tests.helpers.stagerun import default_params

TINY = C.CamembertConfig(logging_steps=5, eval_batch_size=64, num_threads=1, seed=0, device="cpu").with_active(
    max_length=32,
    epochs=12,
    batch_size=16,
    learning_rate=3e-3,
    warmup_ratio=0.1,
    group_by_length=False,
    scratch=ScratchArchitecture(vocab_size=1000, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128),
)
# random batches: on these 426 rows length-grouped batches learnt less in 12 epochs (test weighted F1 0.059,
# majority 0.020); on the 4,000-row sample they learnt more (0.55 against 0.45), so the profiles keep them


@pytest.fixture(scope="module")
def frames(tiny_split):
    return parts(model_frame(tiny_split))


@pytest.fixture(scope="module")
def trained(frames, tmp_path_factory):
    train, val, _ = frames
    live_dir = tmp_path_factory.mktemp("live") / "camembert"
    return C.train(train, val, TINY, live_dir=live_dir), live_dir


def _f1(model, rows: pd.DataFrame) -> float:
    return model_weighted_f1(C, model, rows)


def test_predictions_have_the_contract_shape_and_sum_to_one(trained, tiny_split):
    model, _ = trained
    rows = model_frame(tiny_split)
    rows = rows[rows["split"].isin(["val", "test", "official_test"])].reset_index(drop=True)
    proba = C.predict_proba(model, rows)
    assert proba.shape == (len(rows), N_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    check_proba(proba)
    assert list(proba_frame(rows, proba).columns[3:]) == list(PROBA_COLUMNS)


def test_beats_the_majority_class_baseline(trained, frames):
    model, _ = trained
    train, _, test = frames
    assert _f1(model, test) > majority_weighted_f1(train, test) + 0.05


@pytest.mark.param_effect("camembert.demo.epochs")
def test_keeps_the_best_epoch_and_logs_dvclive_curves(trained, frames):
    model, live_dir = trained
    _, val, _ = frames
    assert len(model.history) == TINY.epochs
    best = max(h["weighted_f1"] for h in model.history)
    assert _f1(model, val) == pytest.approx(best, abs=1e-6)
    curve = pd.read_csv(live_dir / "plots" / "metrics" / "eval" / "weighted_f1.tsv", sep="\t")
    assert len(curve) == TINY.epochs and curve["weighted_f1"].max() == pytest.approx(best, abs=1e-6)
    assert (live_dir / "plots" / "metrics" / "loss.tsv").is_file()  # train-loss curve


def test_save_load_round_trip_gives_the_same_probabilities(trained, frames, tmp_path):
    model, _ = trained
    _, _, test = frames
    C.save(model, tmp_path / "camembert")
    again = C.load(tmp_path / "camembert")
    np.testing.assert_allclose(C.predict_proba(again, test), C.predict_proba(model, test), atol=1e-6)
    assert again.config == model.config and again.rows == model.rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camembert"]  # atomic: no temp dir left


@pytest.mark.param_effect("camembert.seed", "camembert.demo.max_train_rows")
def test_same_seed_same_metrics_on_cpu(frames):
    train, val, test = frames
    short = TINY.with_active(epochs=1, max_train_rows=150)
    a, b = C.train(train, val, short), C.train(train, val, short)
    assert a.history == b.history
    assert a.rows["train_rows_used"] < len(train)
    np.testing.assert_array_equal(C.predict_proba(a, test), C.predict_proba(b, test))
    other = C.train(train, val, replace(short, seed=1))
    assert not np.array_equal(C.predict_proba(a, test), C.predict_proba(other, test))


def test_tokenizer_uses_camembert_special_tokens():
    tok = train_tokenizer(["une table en bois", "un jeu de société", "a wooden table"] * 20, vocab_size=60)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = tok("une table")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) > 2


def test_balanced_loss_matches_weighted_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    weights = torch.tensor([1.0, 3.0, 0.5])
    got = weighted_loss(weights)({"logits": logits}, labels)
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (per_row * weights[labels]).sum() / weights[labels].sum()
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


def test_build_trainer_takes_the_runs_arguments_and_only_explicit_overrides(frames, tmp_path):
    from rakuten.models.camembert.data import EncodedTexts, encode
    from rakuten.models.camembert.encoder import build_model
    from rakuten.models.camembert.training import build_trainer
    from rakuten.runtime.torch_setup import Runtime, frame_labels

    train, _, _ = frames
    texts = train["text_light"].tolist()[:40]
    tokenizer, model = build_model(TINY, texts)
    data = EncodedTexts(encode(tokenizer, texts, TINY.max_length), frame_labels(train.head(40)))
    cpu = Runtime("cpu", "fp32")
    run = build_trainer(replace(TINY, class_weighting="balanced"), cpu, model, tokenizer, (data, data), str(tmp_path))
    assert run.args.num_train_epochs == TINY.epochs and run.args.load_best_model_at_end
    assert run.args.per_device_train_batch_size == TINY.batch_size and run.compute_loss_func is not None
    bench = build_trainer(
        TINY,
        cpu,
        model,
        tokenizer,
        (data, data),
        str(tmp_path),
        overrides={"max_steps": 3, "eval_strategy": "no", "load_best_model_at_end": False},
    )
    assert bench.args.max_steps == 3 and not bench.args.load_best_model_at_end and bench.compute_loss_func is None
    assert bench.args.learning_rate == TINY.learning_rate  # everything else stays the run's


def test_default_params_parse_and_both_profiles_are_complete():
    section = default_params()["camembert"]
    demo = parse_section(C.CamembertConfig, section, "camembert")
    assert demo.profile == "demo" and demo.model == SCRATCH
    full = parse_section(C.CamembertConfig, {**section, "profile": "full"}, "camembert")
    assert full.model == "camembert-base" and full.epochs == 3 and full.batch_size == 16
    assert full.weight_decay == pytest.approx(0.01)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"profile": "large"}, "camembert.profile"),
        ({"demo": {"learning_rate": 0}}, "camembert.demo.learning_rate"),
        ({"demo": {"scratch": {"hidden_size": 130, "num_heads": 4}}}, "camembert.demo.scratch.hidden_size"),
        ({"class_weighting": "inverse"}, "camembert.class_weighting"),
    ],
)
def test_bad_params_name_the_key(override, key):
    section = default_params()["camembert"]
    merged = {**section}
    for k, v in override.items():
        merged[k] = {**section[k], **v} if isinstance(v, dict) and k in section else v
        if k == "demo" and "scratch" in v:
            merged[k] = {**section[k], "scratch": {**section[k]["scratch"], **v["scratch"]}}
    with pytest.raises(PipelineError) as err:
        parse_section(C.CamembertConfig, merged, "camembert")
    assert key in str(err.value) and "\n" not in str(err.value)


def test_missing_text_column_is_one_line(frames):
    train, val, _ = frames
    with pytest.raises(PipelineError, match="missing column text_light"):
        C.train(train.drop(columns=["text_light"]), val, TINY)


def test_a_rows_outputs_do_not_depend_on_the_rows_beside_it(trained, tiny_split):
    """On CPU each text runs alone, unpadded: chunks, single rows and a reversed order give the same bits, and
    the one pass for both outputs equals the separate calls (a padded batch rounds a row with its neighbours)."""
    model, _ = trained
    rows = model_frame(tiny_split)
    rows = rows[rows["split"].isin(["val", "test"])].reset_index(drop=True).iloc[:40]
    proba = assert_row_invariant(lambda f: C.predict_and_embed(model, f)[0], rows)
    vectors = assert_row_invariant(lambda f: C.predict_and_embed(model, f)[1], rows)
    np.testing.assert_array_equal(C.predict_proba(model, rows), proba)
    np.testing.assert_array_equal(C.embed_texts(model, rows), vectors)

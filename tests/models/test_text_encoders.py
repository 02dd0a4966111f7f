"""Every text-encoder family the text stage takes, at a tiny size on the tiny catalog: trains offline,
writes contract probabilities, embeds, saves and loads; LoRA fine-tuning; one line per family when
pretrained weights are missing offline. (The CamemBERT default is covered in test_models_camembert.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rakuten.contracts.classes import N_CLASSES
from rakuten.contracts.model_files import check_proba, proba_frame
from rakuten.core.errors import PipelineError
from rakuten.models.camembert import model as C
from rakuten.models.camembert.config import LoraSettings, ScratchArchitecture
from tests.helpers.deep_frames import model_frame, parts
from tests.helpers.scoring import majority_weighted_f1, model_weighted_f1

ARCH = ScratchArchitecture(vocab_size=1000, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)
TINY = C.CamembertConfig(logging_steps=50, eval_batch_size=64, num_threads=1, seed=0, device="cpu").with_active(
    max_length=32, epochs=12, batch_size=16, learning_rate=3e-3, warmup_ratio=0.1, scratch=ARCH, group_by_length=False
)  # random batches at this size (see test_models_camembert.TINY)
FAMILIES = ("xlm-roberta", "flaubert", "deberta-v2", "bert")
# what `camembert.<profile>.model` takes for each family (offline: none of them is on disk here)
HUB_IDS = (
    "camembert-base",
    "camembert/camembert-large",
    "almanach/camembertav2-base",
    "FacebookAI/xlm-roberta-base",
    "flaubert/flaubert_base_cased",
)


@pytest.fixture(scope="module")
def frames(tiny_split):
    return parts(model_frame(tiny_split))


@pytest.fixture(scope="module")
def families(frames):
    train, val, _ = frames
    return {
        family: C.train(train, val, TINY.with_active(scratch=replace(ARCH, model_type=family))) for family in FAMILIES
    }


def _f1(model, rows) -> float:
    return model_weighted_f1(C, model, rows)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_writes_contract_probabilities_and_embeddings(families, frames, family):
    model = families[family]
    _, _, test = frames
    assert model.model.config.model_type == family
    proba = C.predict_proba(model, test)
    check_proba(proba)
    assert len(proba_frame(test, proba)) == len(test)
    assert proba.shape == (len(test), N_CLASSES) and np.allclose(proba.sum(axis=1), 1.0)
    emb = C.embed_texts(model, test)
    assert C.embedding_dim(model) == 64 and emb.shape == (len(test), 64) and emb.dtype == np.float32
    assert np.isfinite(emb).all() and len(np.unique(emb.round(4), axis=0)) > 1


@pytest.mark.slow
def test_the_families_learn_beyond_the_majority_baseline(families, frames):
    train, _, test = frames
    f1 = {family: _f1(model, test) for family, model in families.items()}
    baseline = majority_weighted_f1(train, test)
    assert min(f1.values()) > baseline + 0.05, f1


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_round_trips_through_save_and_load(families, frames, family, tmp_path):
    model = families[family]
    _, _, test = frames
    C.save(model, tmp_path / "m")
    loaded = C.load(tmp_path / "m")
    assert type(loaded.model).__name__ == type(model.model).__name__
    np.testing.assert_allclose(C.predict_proba(loaded, test), C.predict_proba(model, test), atol=1e-6)
    np.testing.assert_allclose(C.embed_texts(loaded, test), C.embed_texts(model, test), atol=1e-5)


def test_lora_trains_adapters_and_saves_a_plain_model(frames, tmp_path):
    train, val, test = frames
    cfg = replace(TINY.with_active(epochs=3, learning_rate=1e-2), lora=LoraSettings(r=4, alpha=8.0, dropout=0.0))
    model = C.train(train, val, cfg)
    assert not hasattr(model.model, "peft_config")  # adapters merged: a plain Hugging Face model
    assert not [n for n, _ in model.model.named_parameters() if "lora_" in n]
    proba = C.predict_proba(model, test)
    assert np.allclose(proba.sum(axis=1), 1.0)
    C.save(model, tmp_path / "lora")
    np.testing.assert_allclose(C.predict_proba(C.load(tmp_path / "lora"), test), proba, atol=1e-6)
    assert C.training_report(model)["lora_r"] == 4


@pytest.mark.parametrize("hub_id", HUB_IDS)
def test_missing_pretrained_weights_offline_is_one_line_per_family(hub_id, offline):
    cfg = C.CamembertConfig(profile="full").with_active(model=hub_id, local_dir="")
    with pytest.raises(PipelineError) as err:
        C.resolve_weights(cfg)
    message = str(err.value)
    assert "\n" not in message and hub_id in message and f"hf download {hub_id}" in message

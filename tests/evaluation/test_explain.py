"""Explanations per model (rakuten.evaluation.explain) on the tiny built repository's trained models.

Real behaviour, not shapes only: TF-IDF weights add up to the SVM's decision score, integrated gradients
add up to the logit difference from the pad baseline (completeness), Grad-CAM leaves the network as it
found it, and the row dispatcher drops models whose input the row lacks.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from rakuten.contracts import registry
from rakuten.contracts.classes import CLASS_CODES, N_CLASSES
from rakuten.core.errors import PipelineError
from rakuten.evaluation import explain
from rakuten.evaluation import gradcam as cam
from rakuten.models import tfidf_svm
from rakuten.models.camembert import model as camembert
from rakuten.models.camembert.config import ScratchArchitecture
from rakuten.models.camembert.encoder import scratch_config
from rakuten.models.resnet50 import model as resnet50
from rakuten.models.resnet50.backbones import make_net


@pytest.fixture(scope="module")
def built(tiny_built_repo):
    """The tiny repo's models (every registered one, as a service would load them) and its cleaned frame
    (catalog + text + image quality, absolute image paths), as ``rakuten.serving.predict.model_frame`` gives it."""
    root = tiny_built_repo
    models = {}
    for name in ("tfidf_svm", "fasttext", "camembert", "resnet50", "joint"):
        module = registry.load_module(name)
        models[name] = (module, module.load(root / "models" / name))
    frame = (
        pd.read_parquet(root / "data/interim/catalog.parquet")
        .merge(pd.read_parquet(root / "data/processed/text.parquet"), on="row_id")
        .merge(
            pd.read_parquet(root / "data/processed/image_quality.parquet")[["row_id", "clean_path", "readable"]],
            on="row_id",
        )
    )
    frame["clean_path"] = [str(root / p) for p in frame["clean_path"]]
    usable = frame[~frame["text_empty"] & frame["readable"] & frame["image_ok"]]
    return models, usable.reset_index(drop=True)


def _model(built, name):
    return built[0][name][1]


def _row(built, i: int = 0) -> pd.Series:
    return built[1].iloc[i]


# ------------------------------------------------------------------------------------------ TF-IDF


def _decision(model, text: str, class_index: int) -> float:
    """The calibrated SVM's decision score of the class: the mean of its fold estimators' scores."""
    clf = model.pipeline.named_steps["clf"]
    x = model.pipeline.named_steps["tfidf"].transform([text])
    col = list(clf.classes_).index(CLASS_CODES[class_index])
    return float(np.mean([c.estimator.decision_function(x)[0, col] for c in clf.calibrated_classifiers_]))


def _predicted(module, model, frame: pd.DataFrame) -> int:
    return int(module.predict_proba(model, frame).argmax(axis=1)[0])


def test_tfidf_terms_are_the_texts_terms_and_add_up_to_the_decision_score(built):
    model, row = _model(built, "tfidf_svm"), _row(built)
    text = row[model.config.text_column]
    cls = _predicted(tfidf_svm, model, row.to_frame().T)
    terms = explain.tfidf_terms(model, text, cls, k=5)
    words = set(text.split())
    assert 0 < len(terms) <= 5
    assert all(set(t["term"].split()) <= words for t in terms)
    weights = [t["weight"] for t in terms]
    assert weights == sorted(weights, reverse=True)
    # every term of the text (k large) + the mean intercept = the decision score: weights are its shares
    everything = explain.tfidf_terms(model, text, cls, k=10_000)
    clf = model.pipeline.named_steps["clf"]
    col = list(clf.classes_).index(CLASS_CODES[cls])
    intercept = np.mean([c.estimator.intercept_[col] for c in clf.calibrated_classifiers_])
    assert sum(t["weight"] for t in everything) + intercept == pytest.approx(_decision(model, text, cls), abs=1e-4)
    assert explain.tfidf_terms(model, text, cls, k=5) == terms  # deterministic


def test_removing_the_top_tfidf_term_lowers_the_class_score(built):
    model = _model(built, "tfidf_svm")
    checked = 0
    for i in range(len(built[1])):
        row = _row(built, i)
        text = row[model.config.text_column]
        cls = _predicted(tfidf_svm, model, row.to_frame().T)
        top = [t for t in explain.tfidf_terms(model, text, cls) if " " not in t["term"] and t["weight"] > 0]
        if not top:
            continue
        without = " ".join(w for w in text.split() if w != top[0]["term"])
        assert _decision(model, without, cls) < _decision(model, text, cls), (text, top[0])
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_tfidf_terms_empty_text_and_random_forest(built):
    model = _model(built, "tfidf_svm")
    assert explain.tfidf_terms(model, "", 0) == []
    assert explain.tfidf_terms(model, "   ", 0) == []
    # random forest: no per-class weights -> impurity importance x the term's TF-IDF value
    frame = built[1].head(120)
    cfg = dataclasses.replace(model.config, classifier="rf", rf=tfidf_svm.RandomForestConfig(n_estimators=5), n_jobs=1)
    rf = tfidf_svm.train(frame, None, cfg)
    text = frame[cfg.text_column].iloc[0]
    terms = explain.tfidf_terms(rf, text, 3, k=3)
    vec = rf.pipeline.named_steps["tfidf"]
    x = vec.transform([text]).toarray()[0]
    importance = rf.pipeline.named_steps["clf"].feature_importances_
    expected = sorted((importance * x)[x > 0], key=abs, reverse=True)[:3]
    assert sorted(t["weight"] for t in terms) == pytest.approx(sorted(np.round(expected, 6)))
    assert explain.tfidf_terms(rf, text, 20, k=3) == terms  # the same for every class


# ------------------------------------------------------------------------------------- transformer


def _logit(hf, ids: list[int], positions: list[int] | None, cls: int) -> float:
    """The class logit with every token attended (FlauBERT would otherwise mask pads out by itself)."""
    extra = {} if positions is None else {"position_ids": torch.tensor([positions])}
    with torch.no_grad():
        return float(
            hf(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), **extra).logits[
                0, cls
            ]
        )


def test_transformer_tokens_are_words_and_attributions_are_complete(built):
    model, row = _model(built, "camembert"), _row(built)
    text = row[model.config.text_column]
    cls = _predicted(camembert, model, row.to_frame().T)
    tokens = explain.transformer_tokens(model, text, cls, k=4)
    assert 0 < len(tokens) <= 4
    assert all(t["token"] in text.split() for t in tokens)
    assert [t["weight"] for t in tokens] == sorted((t["weight"] for t in tokens), reverse=True)
    assert explain.transformer_tokens(model, text, cls, k=4) == tokens  # deterministic

    result = explain.token_attributions(model, text, cls, steps=16)
    specials = [i for i, w in enumerate(result.word_ids) if w is None]
    assert [result.baseline_ids[i] for i in specials] == [result.input_ids[i] for i in specials]
    assert {result.baseline_ids[i] for i, w in enumerate(result.word_ids) if w is not None} == {
        model.tokenizer.pad_token_id
    }
    # completeness: the attributions sum to logit(text) - logit(pad baseline, same positions)
    gap = _logit(model.model, result.input_ids, result.position_ids, cls) - _logit(
        model.model, result.baseline_ids, result.position_ids, cls
    )
    assert result.attributions.sum() == pytest.approx(gap, abs=1e-3 + 0.05 * abs(gap))
    assert abs(result.delta) <= 1e-3 + 0.05 * abs(gap)
    # the model predicts exactly as before (no hooks, gradients or mode left behind)
    assert model.model.training is False
    assert all(p.grad is None for p in model.model.parameters())
    assert explain.transformer_tokens(model, "", cls) == []


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta", "deberta-v2", "flaubert"])
def test_transformer_tokens_work_for_other_encoder_families(built, model_type):
    """Any AutoModelForSequenceClassification: a tiny random encoder of another family, same tokenizer."""
    from transformers import AutoModelForSequenceClassification

    trained = _model(built, "camembert")
    arch = ScratchArchitecture(model_type=model_type, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_config(
        scratch_config(arch, trained.tokenizer, trained.config.max_length)
    ).eval()
    model = camembert.CamembertModel(model=hf, tokenizer=trained.tokenizer, config=trained.config)
    text = _row(built)[trained.config.text_column]
    tokens = explain.transformer_tokens(model, text, 5, k=3)
    assert tokens and all(t["token"] in text.split() for t in tokens)
    result = explain.token_attributions(model, text, 5, steps=16)
    gap = _logit(hf, result.input_ids, result.position_ids, 5) - _logit(hf, result.baseline_ids, result.position_ids, 5)
    assert result.attributions.sum() == pytest.approx(gap, abs=1e-3 + 0.05 * abs(gap))


# ---------------------------------------------------------------------------------------- Grad-CAM


def _hooks(net: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())


def test_gradcam_heat_map(built):
    model = _model(built, "resnet50")
    frame = built[1].head(2)
    first, second = frame["clean_path"].tolist()
    before = resnet50.predict_proba(model, frame)
    flags = [p.requires_grad for p in model.net.parameters()]
    heats = [cam.gradcam(model, first, c) for c in range(N_CLASSES)]
    size = model.config.image_size
    assert all(h.shape == (size, size) and h.dtype == np.float32 and 0.0 <= h.min() <= h.max() <= 1.0 for h in heats)
    # a class whose weighted map is negative everywhere gets zeros (Grad-CAM's ReLU); others span [0, 1]
    cls = next(c for c, h in enumerate(heats) if h.max() > 0)
    heat = heats[cls]
    assert heat.min() == 0.0 and heat.max() > 0.99
    assert np.array_equal(cam.gradcam(model, first, cls), heat)  # deterministic
    assert any(not np.allclose(h, heat) for h in heats)  # differs between classes
    assert not np.allclose(cam.gradcam(model, second, cls), heat)  # and between images
    # the network predicts exactly as before: no hooks, gradients, requires_grad or mode changes left
    assert _hooks(model.net) == 0
    assert [p.requires_grad for p in model.net.parameters()] == flags
    assert all(p.grad is None for p in model.net.parameters())
    assert model.net.training is False
    assert np.array_equal(resnet50.predict_proba(model, frame), before)


def test_gradcam_bad_class_and_missing_image(built, tmp_path):
    model = _model(built, "resnet50")
    path = _row(built)["clean_path"]
    with pytest.raises(PipelineError, match="class_index"):
        cam.gradcam(model, path, N_CLASSES)
    with pytest.raises(PipelineError, match="not found"):
        cam.gradcam(model, tmp_path / "absent.jpg", 0)


def _with_arch(model: resnet50.ResnetModel, net: torch.nn.Module, arch: str, size: int) -> resnet50.ResnetModel:
    cfg = model.config
    cfg = dataclasses.replace(cfg, demo=dataclasses.replace(cfg.demo, arch=arch, image_size=size))
    return resnet50.ResnetModel(net=net.eval(), config=cfg)


def test_gradcam_unsupported_transformer_is_one_line(built, monkeypatch):
    """A timm ViT (built at 32 px, random weights: nothing downloaded) -> one-line PipelineError, and
    explain_frame_row turns it into kind "none" with that line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trained = _model(built, "resnet50")
    vit = _with_arch(trained, make_net("vit_tiny_patch16_224", 32), "vit_tiny_patch16_224", 32)
    row = _row(built)
    with pytest.raises(PipelineError) as err:
        cam.gradcam(vit, row["clean_path"], 0)
    message = str(err.value)
    assert "\n" not in message and re.search(r"Grad-CAM is not supported for arch vit_tiny_patch16_224", message)
    out = explain.explain_frame_row({"vit": (resnet50, vit)}, row, 0)
    assert out == {"vit": {"kind": "none", "reason": message}}

    class FakeTransformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = torch.nn.Conv2d(3, 8, 8, stride=8)
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = torch.nn.Linear(8, N_CLASSES)

        def forward(self, x):
            tokens = self.patch(x).flatten(2).transpose(1, 2)
            return self.head(self.attn(tokens, tokens, tokens)[0].mean(1))

    with pytest.raises(PipelineError, match="not supported for arch fake_vit"):
        cam.find_target_layer(FakeTransformer().eval(), "fake_vit", 32)


def test_gradcam_finds_the_last_map_of_any_cnn(built):
    """Generic target search: a plain CNN that is no torchvision/timm class gets its last feature map."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, N_CLASSES),
    ).eval()
    assert cam.find_target_layer(net, "plain", 32) == "4"
    model = _with_arch(_model(built, "resnet50"), net, "resnet18", 32)
    heat = cam.gradcam(model, _row(built)["clean_path"], 0)
    assert heat.shape == (32, 32) and 0.0 <= heat.min() <= heat.max() <= 1.0
    # the demo ResNet at 32 px: layer4 is 1 x 1 (a constant map), so the last larger stage is used
    assert cam.find_target_layer(_model(built, "resnet50").net, "resnet18", 32) == "layer3.1"
    assert cam.find_target_layer(make_net("resnet18", 64).eval(), "resnet18", 64) == "layer4.1"


# ------------------------------------------------------------------------------- overlay, data URI


def test_overlay_and_data_uri(built):
    model, path = _model(built, "resnet50"), _row(built)["clean_path"]
    heat = cam.gradcam(model, path, 0)
    image = cam.overlay(path, heat)
    assert image.size == heat.shape[::-1] and image.mode == "RGB"
    big = cam.overlay(path, heat, size=96)
    assert big.size == (96, 96)
    uri = cam.data_uri(big)
    assert uri.startswith("data:image/png;base64,") and uri == cam.data_uri(cam.overlay(path, heat, size=96))
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert np.array_equal(np.asarray(decoded), np.asarray(big)) and not decoded.info.get("exif")
    jpeg = cam.data_uri(big, "jpeg")
    assert jpeg.startswith("data:image/jpeg;base64,") and jpeg == cam.data_uri(big, "JPEG")


# ----------------------------------------------------------------------------------- one product row


def test_explain_frame_row(built):
    models = built[0]
    row = _row(built)
    out = explain.explain_frame_row(models, row, 3, k=4)
    assert list(out) == ["tfidf_svm", "camembert", "resnet50"]  # fastText and joint have no explainer
    assert out["tfidf_svm"]["kind"] == "terms" and 0 < len(out["tfidf_svm"]["items"]) <= 4
    assert out["tfidf_svm"]["items"] == explain.tfidf_terms(_model(built, "tfidf_svm"), row["text_norm"], 3, k=4)
    assert out["camembert"]["kind"] == "tokens"
    camembert_model = _model(built, "camembert")
    assert out["camembert"]["items"] == explain.transformer_tokens(camembert_model, row["text_light"], 3, k=4)
    assert out["resnet50"]["kind"] == "gradcam" and out["resnet50"]["image"].startswith("data:image/png;base64,")
    assert explain.explain_frame_row(models, row, 3, k=4) == out  # deterministic

    unreadable = row.copy()
    unreadable["readable"] = False
    assert "resnet50" not in explain.explain_frame_row(models, unreadable, 3)
    no_file = row.copy()
    no_file["image_ok"] = False
    assert "resnet50" not in explain.explain_frame_row(models, no_file, 3)

    empty = row.copy()
    empty["text_norm"], empty["text_light"], empty["text_empty"] = "", "", True
    assert list(explain.explain_frame_row(models, empty, 3)) == ["resnet50"]

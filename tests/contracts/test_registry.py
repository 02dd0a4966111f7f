"""The registry of models and what other stages derive from it (defaults kept as they were)."""

from __future__ import annotations

import dataclasses

import pytest

from rakuten.contracts import registry
from rakuten.core.errors import PipelineError
from rakuten.evaluation import evaluate as E
from rakuten.evaluation.report.image_model import IMAGE_MODEL
from rakuten.fusion.config import FusionConfig

NAMES = ("tfidf_svm", "fasttext", "camembert", "resnet50", "joint")


def test_the_registered_models_and_their_modalities():
    assert tuple(registry.MODELS) == NAMES
    assert [m.modality for m in registry.MODELS.values()] == ["text", "text", "text", "image", "multimodal"]
    assert all(m.config and m.desc for m in registry.MODELS.values())


def test_fusion_defaults_come_from_the_registry():
    cfg = FusionConfig()
    assert cfg.models == NAMES
    assert cfg.weights == {"tfidf_svm": 0.15, "fasttext": 0.15, "camembert": 0.15, "resnet50": 0.25, "joint": 0.3}
    assert registry.default_weights() == cfg.weights
    assert FusionConfig().weights is not FusionConfig().weights  # a fresh dict per instance


def test_encoders_and_the_report_image_model():
    assert registry.encoder_names("text") == ("camembert",)
    assert registry.encoder_names("image") == ("resnet50",)
    assert registry.report_image_model() == IMAGE_MODEL == "resnet50"


@pytest.mark.parametrize("flagged", [(), ("resnet50", "joint")])
def test_not_exactly_one_report_image_model_is_one_line(monkeypatch, flagged):
    for name, spec in list(registry.MODELS.items()):
        monkeypatch.setitem(registry.MODELS, name, dataclasses.replace(spec, report_image=name in flagged))
    with pytest.raises(PipelineError, match=f"{len(flagged)} models set report_image") as exc:
        registry.report_image_model()
    assert "\n" not in str(exc.value)


def test_study_figures_of_the_models_come_from_the_registry(monkeypatch):
    assert E.study_reference("tfidf_svm") == (0.8172, "TF-IDF 10k + LinearSVC C=1 balanced")
    assert E.study_reference("resnet50") == (0.5978, "ResNet50 ImageNet, fine-tuned on cleaned images")
    assert E.study_reference("joint")[0] is None and E.study_reference("joint")[1].startswith("not in the study")
    assert E.study_reference("fusion_stacking_xgboost") == (0.9002, "best of the study")
    assert E.study_reference("fusion_voting_stacking") == (None, "below plain stacking (no figure given)")
    assert E.study_reference("fusion") == (None, "")
    monkeypatch.setitem(registry.MODELS, "toy", registry.ModelSpec("toy", "toy_module", "text", study_f1=0.5))
    assert E.study_reference("toy") == (0.5, "")


def test_loaders_name_the_model_and_what_is_missing(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "ghost", registry.ModelSpec("ghost", "no_such_module_xyz", "text"))
    with pytest.raises(PipelineError, match="model ghost: cannot import no_such_module_xyz"):
        registry.load_module("ghost")
    monkeypatch.setitem(registry.MODELS, "half", registry.ModelSpec("half", "textwrap", "text"))
    with pytest.raises(PipelineError, match=r"model half: textwrap has no load\(\)"):
        registry.load_module("half")
    with pytest.raises(PipelineError, match="unknown model 'nope'"):
        registry.spec("nope")


def test_register_checks_the_modality(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    registry.register(registry.ModelSpec("toy", "toy_module", "text"))
    assert registry.spec("toy").weight == 0.0 and not registry.spec("toy").encoder
    with pytest.raises(ValueError, match="modality 'audio'"):
        registry.register(registry.ModelSpec("bad", "m", "audio"))

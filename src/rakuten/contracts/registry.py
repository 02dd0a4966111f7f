"""The one list of model stages: name -> implementing module, input modality and what the rest of the
pipeline needs to know about it.

Fusion, evaluation, the report, the ``embed`` stage and the ``rakuten predict`` command look models up
here, and the per-model parts of ``dvc.yaml`` are generated from it (``python -m tools.registry_sync
--write``), so adding a model is its module, one entry below and its ``dvc.yaml`` stage
(docs/adding-a-model.md). The modality says which input a model needs: when a product has no usable
image, fusion drops the ``image`` models for that row; when its text is empty, it drops the ``text``
models; a ``multimodal`` model (``joint``, text and image at once) is dropped only when the row has neither.

Importing this module imports no model: the ``load_*`` functions import a model's module on use, so a
stage that only reads names and defaults never depends on (or reruns for) the models' code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from rakuten.core.errors import PipelineError

MODALITIES = ("text", "image", "multimodal")
#: what a loaded model module must have (``train`` / ``save`` are its stage's; predicting needs these two)
INTERFACE = ("load", "predict_proba")


@dataclass(frozen=True)
class ModelSpec:
    """A model stage: its name (``models/<name>/``, ``reports/probs/<name>.parquet``, the ``<name>`` section
    of params.yaml), module and modality, plus what other stages derive from it (defaults shown)."""

    name: str
    module: str
    modality: str
    #: the class in ``module`` that declares its params.yaml section (:mod:`rakuten.core.config`)
    config: str = ""
    #: its default soft-vote weight (``fusion.weights``, renormalised over ``fusion.models``)
    weight: float = 0.0
    #: it can embed its modality (``embed_texts`` / ``embed_images``): a choice of ``embed.text_model`` /
    #: ``embed.image_model``, the frozen encoders of ``joint``
    encoder: bool = False
    #: the image model the report explains with Grad-CAM (exactly one model sets it)
    report_image: bool = False
    #: the study's weighted F1 of this model, shown beside its test score (None: not in the study)
    study_f1: float | None = None
    #: the study's setting for that figure, or why there is none
    study_setting: str = ""
    #: one line for the ``artifacts:`` entry of ``models/<name>`` in dvc.yaml
    desc: str = ""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "tfidf_svm",
            "rakuten.models.tfidf_svm",
            "text",
            config="TfidfSvmConfig",
            weight=0.15,
            study_f1=0.8172,
            study_setting="TF-IDF 10k + LinearSVC C=1 balanced",
            desc="TF-IDF + LinearSVC with calibrated probabilities on the spaCy-normalised text",
        ),
        ModelSpec(
            "fasttext",
            "rakuten.models.fasttext",
            "text",
            config="FastTextConfig",
            weight=0.15,
            study_f1=0.8173,
            study_setting="fastText supervised, lr 0.5, dim 100, 100 epochs, bigrams",
            desc="supervised fastText classifier on the spaCy-normalised text",
        ),
        ModelSpec(
            "camembert",
            "rakuten.models.camembert.model",
            "text",
            config="CamembertConfig",
            weight=0.15,
            encoder=True,
            study_f1=0.8859,
            study_setting="camembert-base fine-tuned 3 epochs",
            desc="transformer text classifier fine-tuned on the lightly cleaned text (camembert by default; "
            "any Hugging Face encoder, camembert.<profile>.model)",
        ),
        ModelSpec(
            "resnet50",
            "rakuten.models.resnet50.model",
            "image",
            config="ResnetConfig",
            weight=0.25,
            encoder=True,
            report_image=True,
            study_f1=0.5978,
            study_setting="ResNet50 ImageNet, fine-tuned on cleaned images",
            desc="image classifier fine-tuned on the cleaned product photos (ResNet50 in the study; "
            "any torchvision or timm backbone, resnet50.<profile>.arch)",
        ),
        ModelSpec(
            "joint",
            "rakuten.models.joint",
            "multimodal",
            config="JointConfig",
            weight=0.3,
            study_setting="not in the study (text + image head on frozen camembert / resnet50 embeddings)",
            desc="text + image head (LayerNorm + projection per modality, concat, MLP) on frozen "
            "camembert / resnet50 embeddings",
        ),
    )
}


def spec(name: str) -> ModelSpec:
    """The registered model ``name``; unknown names are a one-line error listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise PipelineError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}") from None


def register(model: ModelSpec) -> None:
    """Add or replace a model (plugins and tests); the modality must be one of :data:`MODALITIES`."""
    if model.modality not in MODALITIES:
        raise ValueError(f"model {model.name}: modality {model.modality!r}, expected one of {MODALITIES}")
    MODELS[model.name] = model


def default_weights() -> dict[str, float]:
    """``fusion.weights`` by default: each registered model's :attr:`ModelSpec.weight`, in registry order."""
    return {model.name: model.weight for model in MODELS.values()}


def encoder_names(modality: str) -> tuple[str, ...]:
    """The registered models that can embed ``modality`` for ``embed`` / ``joint``, in registry order."""
    return tuple(m.name for m in MODELS.values() if m.encoder and m.modality == modality)


def report_image_model() -> str:
    """The image model the report explains (:attr:`ModelSpec.report_image`); not exactly one is an error."""
    found = [m.name for m in MODELS.values() if m.report_image]
    if len(found) != 1:
        raise PipelineError(
            f"contracts/registry.py: {len(found)} models set report_image ({', '.join(found) or 'none'}); "
            "expected exactly one image model for the report's Grad-CAM section"
        )
    return found[0]


def _checked(model: ModelSpec, module: ModuleType) -> ModuleType:
    """``module`` once it has the :data:`INTERFACE`; else one line naming the first missing function."""
    missing = [f for f in INTERFACE if not hasattr(module, f)]
    if missing:
        raise PipelineError(
            f"model {model.name}: {model.module} has no {missing[0]}(); expected the model interface "
            "train / predict_proba / save / load"
        )
    return module


# The three loaders below each import by name themselves (no shared helper): tools/import_closure.py
# lists, per loader, the modules it can import (all models, the encoders, the report's image model), so a
# stage that calls one depends on those modules only.


def load_module(name: str) -> ModuleType:
    """Import the module implementing ``name`` (``train``, ``predict_proba``, ``save``, ``load``)."""
    model = spec(name)
    try:
        module = importlib.import_module(model.module)
    except ImportError as exc:
        raise PipelineError(f"model {name}: cannot import {model.module} ({exc})") from None
    return _checked(model, module)


def load_encoders(modality: str) -> dict[str, ModuleType]:
    """The modules of :func:`encoder_names` (``modality``), imported, by name: the ``embed`` stage's choices."""
    out = {}
    for name in encoder_names(modality):
        model = MODELS[name]
        try:
            module = importlib.import_module(model.module)
        except ImportError as exc:
            raise PipelineError(f"model {name}: cannot import {model.module} ({exc})") from None
        out[name] = _checked(model, module)
    return out


def load_report_image_module() -> ModuleType:
    """The module of :func:`report_image_model`, imported: the report loads that model for Grad-CAM."""
    model = MODELS[report_image_model()]
    try:
        module = importlib.import_module(model.module)
    except ImportError as exc:
        raise PipelineError(f"model {model.name}: cannot import {model.module} ({exc})") from None
    return _checked(model, module)

"""The one list of model stages: name -> implementing module and input modality.

Fusion, evaluation and the ``rakuten predict`` command look models up here, so adding a model is
one entry (and its stage), never a change in their code. The modality says which input a model
needs: when a product has no usable image, fusion drops the ``image`` models for that row; when its
text is empty, it drops the ``text`` models; a ``multimodal`` model (``joint``, text and image at
once) is dropped only when the row has neither.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from rakuten.core.errors import PipelineError

MODALITIES = ("text", "image", "multimodal")


@dataclass(frozen=True)
class ModelSpec:
    """A model stage: its name (``models/<name>/``, ``reports/probs/<name>.parquet``), module, modality."""

    name: str
    module: str
    modality: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("tfidf_svm", "rakuten.models.tfidf_svm", "text"),
        ModelSpec("fasttext", "rakuten.models.fasttext", "text"),
        ModelSpec("camembert", "rakuten.models.camembert", "text"),
        ModelSpec("resnet50", "rakuten.models.resnet50", "image"),
        ModelSpec("joint", "rakuten.models.joint", "multimodal"),
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


def load_module(name: str) -> ModuleType:
    """Import the module implementing ``name`` (``train``, ``predict_proba``, ``save``, ``load``)."""
    model = spec(name)
    try:
        module = importlib.import_module(model.module)
    except ImportError as exc:
        raise PipelineError(f"model {name}: cannot import {model.module} ({exc})") from None
    missing = [f for f in ("load", "predict_proba") if not hasattr(module, f)]
    if missing:
        raise PipelineError(
            f"model {name}: {model.module} has no {missing[0]}(); expected the model interface "
            "train / predict_proba / save / load"
        )
    return module

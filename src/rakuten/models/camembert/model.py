"""The text model's interface, what the stage, the embed stage, ``rakuten predict`` and fusion call.

``train / predict_proba / save / load`` (the interface of every model module, see
:mod:`rakuten.contracts.registry`), the sentence embeddings of :mod:`rakuten.models.embed`, the stage's
report and early weight check. The code lives in the package's single-purpose modules:
:mod:`~rakuten.models.camembert.config`, :mod:`~rakuten.models.camembert.encoder`,
:mod:`~rakuten.models.camembert.data`, :mod:`~rakuten.models.camembert.trainer_setup`,
:mod:`~rakuten.models.camembert.training`, :mod:`~rakuten.models.camembert.inference`,
:mod:`~rakuten.models.camembert.persistence`.
"""

from __future__ import annotations

from rakuten.models.camembert.config import NAME, CamembertConfig, CamembertModel
from rakuten.models.camembert.encoder import resolve_weights
from rakuten.models.camembert.inference import embed_texts, embedding_dim, predict_and_embed, predict_proba
from rakuten.models.camembert.persistence import load, save
from rakuten.models.camembert.training import train, training_report

__all__ = [
    "NAME",
    "CamembertConfig",
    "CamembertModel",
    "embed_texts",
    "embedding_dim",
    "load",
    "predict_and_embed",
    "predict_proba",
    "resolve_weights",
    "save",
    "train",
    "training_report",
]

"""The image model's interface, what the stage, the embed stage, ``rakuten predict`` and fusion call.

``train / predict_proba / save / load`` (the interface of every model module, see
:mod:`rakuten.contracts.registry`), the frozen features of :mod:`rakuten.models.embed`, the stage's
input frame, report and early weight check. The code lives in the package's single-purpose modules:
:mod:`~rakuten.models.resnet50.config`, :mod:`~rakuten.models.resnet50.backbones`,
:mod:`~rakuten.models.resnet50.frame`, :mod:`~rakuten.models.resnet50.data`,
:mod:`~rakuten.models.resnet50.parallel`, :mod:`~rakuten.models.resnet50.training`,
:mod:`~rakuten.models.resnet50.inference`, :mod:`~rakuten.models.resnet50.persistence`.
"""

from __future__ import annotations

from rakuten.models.resnet50.backbones import resolve_weights
from rakuten.models.resnet50.config import NAME, ResnetConfig, ResnetModel
from rakuten.models.resnet50.frame import load_image_frame
from rakuten.models.resnet50.inference import embed_images, feature_dim, predict_and_embed, predict_proba
from rakuten.models.resnet50.persistence import load, save
from rakuten.models.resnet50.training import train, training_report

__all__ = [
    "NAME",
    "ResnetConfig",
    "ResnetModel",
    "embed_images",
    "feature_dim",
    "load",
    "load_image_frame",
    "predict_and_embed",
    "predict_proba",
    "resolve_weights",
    "save",
    "train",
    "training_report",
]

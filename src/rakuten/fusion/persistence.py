"""Saving and loading the fused model: ``models/fusion/fusion.joblib`` and its readable ``fusion.json``."""

from __future__ import annotations

import json
from pathlib import Path

import joblib

import rakuten.fusion
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path
from rakuten.fusion.calibration import CALIBRATORS
from rakuten.fusion.meta import LinearSvmMeta, LogregMeta, MetaLearner, XgboostMeta
from rakuten.fusion.model import FusedModel
from rakuten.fusion.strategies import MaxRule, Stacking, VotingStacking
from rakuten.fusion.weights import FittedSoftVote, SoftVote

MODEL_FILE = "fusion.joblib"
SUMMARY_FILE = "fusion.json"
#: the classes a saved fused model can hold (its combiner and what that holds; its calibrator, CALIBRATORS). Unpickling
#: runs their code, so they are imported here, where tools/import_closure.py sees them, for every stage that loads
#: a fused model
COMBINERS = (MaxRule, SoftVote, FittedSoftVote, Stacking, VotingStacking, MetaLearner)
#: the module a pickle names the saved classes by: ``rakuten.fusion``, where fusion lived as one module.
#: Pickles record each class's module, so keeping that name keeps ``fusion.joblib`` byte for byte what
#: earlier runs wrote (its DVC hash too) and lets fused models saved before the package split still load.
PICKLED_AS = "rakuten.fusion"


def _keep_pickled_names(classes: tuple[type, ...]) -> None:
    """Name each class ``rakuten.fusion.<Class>`` for pickle, and make that name resolve to it (as an
    attribute of the package, set here rather than re-exported by its ``__init__``)."""
    for cls in classes:
        cls.__module__ = PICKLED_AS
        setattr(rakuten.fusion, cls.__name__, cls)


_keep_pickled_names((FusedModel, *COMBINERS, *CALIBRATORS, LogregMeta, LinearSvmMeta, XgboostMeta))


def save(model: FusedModel, out_dir: str | Path) -> None:
    """Write ``fusion.joblib`` (the fitted object) and ``fusion.json`` (readable summary) atomically."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        joblib.dump(model, tmp / MODEL_FILE)
        (tmp / SUMMARY_FILE).write_text(json.dumps(model.summary(), indent=2) + "\n", encoding="utf-8")


def load(model_dir: str | Path) -> FusedModel:
    """Load a fused model saved by :func:`save`; a missing one names the stage that makes it."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise PipelineError(f"{path}: fused model not found; run `dvc repro fusion`")
    return joblib.load(path)

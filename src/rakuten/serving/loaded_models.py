"""The trained models of a fused model, loaded once, and their probabilities for cleaned rows.

Why apart from :mod:`rakuten.serving.predict`: this is the part that runs the networks, shared by
``rakuten predict`` (once per worker), the service and the batch engines, and the part whose cost the
catalog-scale work measures (``bench/predict.py``): one forward pass per encoder per row, whose
probabilities and embeddings serve both the encoder's own vote and the joint head, and one copy of each
model in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from rakuten.contracts import registry
from rakuten.contracts.model_files import as_stored
from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords
from rakuten.fusion import persistence
from rakuten.fusion.model import FusedModel, availability
from rakuten.fusion.probs import normalise_rows
from rakuten.models import embed
from rakuten.runtime.torch_setup import set_threads

log = logging.getLogger(__name__)

#: torch threads of a process that predicts. Why one: rows are scored one text (and one head row) at a time, so
#: that a row's outputs do not depend on its neighbours, and such small products lose to a second thread's
#: synchronisation (measured on 2 cores: CamemBERT 227 rows/s on one thread, 11 on two while the other core was
#: busy). Parallelism comes from worker processes (``rakuten predict --workers``), one core each.
PREDICT_THREADS = 1


@contextmanager
def timed(times: dict[str, float], step: str) -> Iterator[None]:
    """Add the seconds the block takes to ``times[step]`` (the per-step profile of ``bench/predict.py``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[step] = times.get(step, 0.0) + time.perf_counter() - start


def trained_model_dir(models_dir: Path, name: str) -> Path:
    """``models_dir/name``, or one line saying which stage trains it."""
    model_dir = Path(models_dir) / name
    if not model_dir.exists():
        raise PipelineError(f"{model_dir}: trained model not found; run `dvc repro {name}`")
    return model_dir


@dataclass
class LoadedModels:
    """The fused model and every model it fuses, loaded once: a long-lived service (``rakuten serve``)
    predicts many times with them, and ``rakuten predict`` once per worker.

    ``members`` maps each fused model's name to its (module, loaded model). ``encoders`` maps a model on
    frozen embeddings (``joint``: its module has ``encoders(model)``) to the saved encoders it reads per
    modality (``{"text": "camembert", "image": "resnet50"}``); ``encoder_models`` holds those encoders, the
    member's own object when the encoder is also fused (one copy in memory), else loaded as the ``embed``
    stage loads them.
    """

    models_dir: Path
    fused: FusedModel
    members: dict[str, tuple[Any, Any]]
    encoders: dict[str, dict[str, str]]
    encoder_models: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # folder -> md5 checked before loading it
    #: seconds spent per step since loading (each encoder's pass, each other model, fusion): a profile, no output
    times: dict[str, float] = field(default_factory=dict)
    #: torch threads of the image models' passes: their convolutions split the batch's images over threads with
    #: the same bits, 1.7x faster on 2 idle cores; ``rakuten predict`` with one worker gives them every core
    image_threads: int = PREDICT_THREADS

    @classmethod
    def load(
        cls,
        models_dir: str | Path = "models",
        fused: FusedModel | None = None,
        records: ArtifactRecords | None = None,
    ) -> "LoadedModels":
        """Every folder is checked against ``records`` (default: the dvc.lock of the project holding
        ``models_dir``) before it is loaded (:mod:`rakuten.core.integrity`)."""
        models_dir = Path(models_dir)
        records = records or ArtifactRecords.for_path(models_dir)
        hashes = {}
        if fused is None:
            hashes["fusion"] = records.verify(models_dir / "fusion")
            fused = persistence.load(models_dir / "fusion")
        for name in fused.models:  # every folder checked before any is loaded: a bad one loads nothing
            hashes[name] = records.verify(trained_model_dir(models_dir, name))
        members, encoders = {}, {}
        for name in fused.models:
            module = registry.load_module(name)
            log.info("loading %s", name)
            members[name] = (module, module.load(trained_model_dir(models_dir, name)))
            needs = getattr(module, "encoders", None)
            if needs is not None:
                encoders[name] = dict(needs(members[name][1]))
        encoder_models = _load_encoders(models_dir, records, members, encoders, hashes)
        set_threads(PREDICT_THREADS)  # after the loads, which set each model's own training threads
        return cls(models_dir, fused, members, encoders, encoder_models, hashes)

    def encoder_outputs(self, frame: pd.DataFrame) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
        """encoder name -> (its probabilities when it is fused too, else None; its embeddings): ONE forward
        pass per encoder per row, shared by the encoder's own probabilities and the joint head."""
        out: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
        for encoder in sorted({e for named in self.encoders.values() for e in named.values()}):
            module, model = self.encoder_models[encoder]
            both = getattr(module, "predict_and_embed", None)
            modality = registry.spec(encoder).modality
            self.announce(encoder)
            with timed(self.times, encoder), self.threads(modality):
                if encoder in self.members and both is not None:
                    out[encoder] = both(model, frame)
                else:
                    out[encoder] = (None, getattr(module, f"embed_{modality}s")(model, frame))
        return out

    def announce(self, name: str) -> None:
        """Log ``predicting with <name>`` the first time a model runs (once per process, not per chunk)."""
        if name not in self.times:
            log.info("predicting with %s", name)

    @contextmanager
    def threads(self, modality: str) -> Iterator[None]:
        """:attr:`image_threads` torch threads for an image model's pass, :data:`PREDICT_THREADS` otherwise."""
        if modality != "image" or self.image_threads == PREDICT_THREADS:
            yield
            return
        set_threads(self.image_threads)
        try:
            yield
        finally:
            set_threads(PREDICT_THREADS)

    def model_input(
        self, name: str, frame: pd.DataFrame, outputs: dict[str, tuple[np.ndarray | None, np.ndarray]] | None = None
    ) -> pd.DataFrame:
        """The frame model ``name`` reads: the cleaned rows, plus their embeddings for a model on frozen
        embeddings, computed as the ``embed`` stage computed them for training."""
        if name not in self.encoders:
            return frame
        outputs = outputs if outputs is not None else self.encoder_outputs(frame)
        named = self.encoders[name]
        return embed.with_vectors(frame, outputs[named["text"]][1], outputs[named["image"]][1])

    def member_probas(self, frame: pd.DataFrame) -> list[np.ndarray]:
        """Each fused model's probabilities of ``frame``, in :attr:`FusedModel.models` order, as stored."""
        outputs = self.encoder_outputs(frame) if self.encoders else {}
        mats = []
        for name, (module, model) in self.members.items():
            proba = outputs[name][0] if name in outputs and outputs[name][0] is not None else None
            if proba is None:
                self.announce(name)
                with timed(self.times, name), self.threads(registry.spec(name).modality):
                    proba = module.predict_proba(model, self.model_input(name, frame, outputs))
            mats.append(as_stored(proba).astype(np.float64))
        return mats

    def predict_proba(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Fused, calibrated probabilities (n, 27) and the inputs used per row.

        Each model's probabilities are rounded to float32 before fusion, as the pipeline stores them
        (``reports/probs/<name>.parquet``) and as the fused model was fitted and the submission made;
        the fused rows are renormalised like the fusion stage's table.
        """
        mats = self.member_probas(frame)
        with timed(self.times, "fusion"):
            text_ok, image_ok = embed.input_flags(frame)  # the flags the joint head's masks come from too
            available = availability(self.fused.modalities, text_ok, image_ok)
            # rows renormalised as the fusion stage does before publishing reports/probs/fusion.parquet
            return (
                normalise_rows(self.fused.predict_proba(mats, available)),
                self.fused.inputs_used(text_ok, image_ok),
            )


def _load_encoders(
    models_dir: Path,
    records: ArtifactRecords,
    members: dict[str, tuple[Any, Any]],
    encoders: dict[str, dict[str, str]],
    hashes: dict[str, str],
) -> dict[str, tuple[Any, Any]]:
    """The encoders the joint models read: a fused member's loaded object when it is one (never a second
    copy), else loaded and verified as the ``embed`` stage loads them."""
    out: dict[str, tuple[Any, Any]] = {}
    cfg = embed.EmbedConfig()  # the batch the embed stage reads images in (on CPU the bits do not depend on it)
    for encoder in sorted({e for named in encoders.values() for e in named.values()}):
        if encoder in members:
            module, model = members[encoder]
        else:
            hashes[encoder] = records.verify(trained_model_dir(models_dir, encoder))
            module = registry.load_module(encoder)
            model = module.load(models_dir / encoder)
        model.config = dataclasses.replace(model.config, eval_batch_size=cfg.eval_batch_size)
        out[encoder] = (module, model)
    return out


def predict_frame(
    frame: pd.DataFrame,
    models_dir: str | Path = "models",
    fused: FusedModel | None = None,
    records: ArtifactRecords | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Fused probabilities and inputs used of cleaned rows, loading the (verified) models for this one call."""
    return LoadedModels.load(models_dir, fused, records).predict_proba(frame)

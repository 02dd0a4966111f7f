"""Supervised fastText (study: lr 0.5, dim 100, epoch 100, wordNgrams 2 -> weighted F1 0.8173).

The input column is a param: ``text_norm`` by default (the study trained fastText on its cleaned,
lemmatised text, and it measured better than ``text_light`` here, see docs/text.md).

Inside this module ``import fasttext`` is the library (absolute imports). With ``fasttext-wheel``
0.9.2 under numpy 2 the high-level ``predict()`` raises a copy error and its list form returns
wrong probabilities, so predictions go through the low-level ``model.f.predict(text, k, threshold,
"strict")`` with ``k = -1`` (every label), then are placed in canonical class order.

Determinism: fastText's Hogwild training is reproducible only with one thread, so ``threads``
defaults to 1 (training on the default sample takes seconds either way).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fasttext
import numpy as np
import pandas as pd

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES
from rakuten.core.config import ConfigError, knob, parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path

log = logging.getLogger(__name__)

NAME = "fasttext"
LABEL_PREFIX = "__label__"
TEXT_COLUMNS = ("text_norm", "text_light")
LOSSES = ("softmax", "ova", "hs")


@dataclass(frozen=True)
class FastTextConfig:
    """``fasttext``: supervised fastText (study best: lr 0.5, dim 100, epoch 100, wordNgrams 2 -> 0.8173)."""

    text_column: str = knob(
        "text_norm", "text_norm (study: cleaned text; measured better) | text_light", choices=TEXT_COLUMNS
    )
    lowercase: bool = knob(True, "lowercase the input text")
    lr: float = knob(0.5, "learning rate", lo=0.0, hi=10.0, lo_open=True)
    dim: int = knob(100, "word vector size", lo=1, hi=1000)
    epoch: int = knob(100, "passes over the training rows", lo=1, hi=1000)
    word_ngrams: int = knob(2, "longest word n-gram", lo=1, hi=5)
    min_count: int = knob(1, "words seen fewer times are ignored", lo=1)
    minn: int = knob(0, "shortest character n-gram (0 = none)", lo=0, hi=10)
    maxn: int = knob(0, "longest character n-gram (0 = none)", lo=0, hi=10)
    bucket: int = knob(
        50000, "hashed n-gram buckets: 20 MB model, same F1 as 200k on the sample (fastText default 2M = 800 MB)", lo=0
    )
    loss: str = knob("softmax", "softmax | ova | hs", choices=LOSSES)
    threads: int = knob(1, "1 = reproducible (Hogwild training is not deterministic with more threads)", lo=1, hi=64)
    seed: int = knob(42, "training seed", lo=0)

    def validate(self, key: str) -> None:
        if self.minn > self.maxn:
            raise ConfigError(f"{key}.minn = {self.minn} > {key}.maxn = {self.maxn}, expected minn <= maxn")


def prepare_text(text: object, lowercase: bool) -> str:
    """One line of input: newlines and other whitespace collapsed (fastText reads line by line)."""
    text = "" if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA else str(text)
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def _texts(frame: pd.DataFrame, cfg: FastTextConfig) -> list[str]:
    if cfg.text_column not in frame.columns:
        raise PipelineError(f"model frame: missing column {cfg.text_column}; expected text.parquet joined on row_id")
    return [prepare_text(t, cfg.lowercase) for t in frame[cfg.text_column].to_numpy(dtype=object)]


@dataclass
class FastTextModel:
    model: Any
    config: FastTextConfig


def train(train_frame: pd.DataFrame, val_frame: pd.DataFrame | None, cfg: FastTextConfig) -> FastTextModel:
    """Fit on ``train_frame`` only (``val_frame`` unused: no early stopping on val)."""
    if "prdtypecode" not in train_frame.columns or train_frame["prdtypecode"].isna().any():
        raise PipelineError("training frame: column prdtypecode must be present and filled on every row")
    labels = train_frame["prdtypecode"].to_numpy(dtype=np.int64)
    lines = [f"{LABEL_PREFIX}{code} {text}\n" for code, text in zip(labels, _texts(train_frame, cfg))]
    fd, path = tempfile.mkstemp(prefix="fasttext-train-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        log.info(
            "fitting fastText on %d rows (epoch=%d, dim=%d, wordNgrams=%d)",
            len(lines),
            cfg.epoch,
            cfg.dim,
            cfg.word_ngrams,
        )
        model = fasttext.train_supervised(
            input=path,
            lr=cfg.lr,
            dim=cfg.dim,
            epoch=cfg.epoch,
            wordNgrams=cfg.word_ngrams,
            minCount=cfg.min_count,
            minn=cfg.minn,
            maxn=cfg.maxn,
            bucket=cfg.bucket,
            loss=cfg.loss,
            thread=cfg.threads,
            seed=cfg.seed,
            verbose=0,
        )
    finally:
        os.unlink(path)
    return FastTextModel(model, cfg)


def predict_proba(model: FastTextModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) probabilities in canonical class order (zero for classes absent from training)."""
    index = {f"{LABEL_PREFIX}{code}": i for i, code in enumerate(CLASS_CODES)}
    out = np.zeros((len(frame), N_CLASSES), dtype=np.float64)
    for row, text in enumerate(_texts(frame, model.config)):
        for prob, label in model.model.f.predict(text + "\n", -1, 0.0, "strict"):
            out[row, index[label]] = prob
    sums = out.sum(axis=1, keepdims=True)
    out = np.where(sums > 0, out, 1.0)  # no prediction at all: uniform rather than an invalid row
    return out / out.sum(axis=1, keepdims=True)


def save(model: FastTextModel, directory: str | Path) -> None:
    """``model.bin`` and ``config.json``, written atomically."""
    with atomic_path(directory, is_dir=True) as tmp:
        model.model.save_model(str(tmp / "model.bin"))
        (tmp / "config.json").write_text(json.dumps(asdict(model.config), indent=2, sort_keys=True) + "\n")


def load(directory: str | Path) -> FastTextModel:
    directory = Path(directory)
    if not (directory / "model.bin").is_file():
        raise PipelineError(f"{directory}/model.bin: not found (run `dvc repro {NAME}`)")
    config = parse_section(
        FastTextConfig, json.loads((directory / "config.json").read_text()), NAME, source=str(directory / "config.json")
    )
    # fastText prints a deprecation notice on every load straight to stderr (not through logging)
    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return FastTextModel(fasttext.load_model(str(directory / "model.bin")), config)

"""Joint text + image classifier: a small head on the frozen, cached embeddings of the ``embed`` stage.

Each modality's embedding goes through LayerNorm + Linear + GELU to ``hidden`` dims; the two are
concatenated (``fusion: concat``) or mixed by a learnt per-dimension gate (``fusion: gated``), then an
MLP with dropout gives the 27 logits. Unlike late fusion, which only sees each model's 27
probabilities, the head sees both representations at once, so it can learn interactions (a text that
is ambiguous alone and an image that settles it).

Missing inputs: a row whose text is empty or whose image is unusable has that modality zeroed
(``text_ok`` / ``image_ok`` of the embeddings), and ``modality_dropout`` zeroes one modality of
complete training rows at random, so the head learns to answer from either one alone.

Trained on ``split == train``, best epoch on val weighted F1 (early stopping), deterministic on CPU
(seeded, pinned numerics; the epoch loop shared with the image model, :func:`rakuten.runtime.training.fit`);
a few seconds on CPU for the 5,000-row sample. The module never imports
the encoders: ``rakuten predict`` attaches the embeddings of new rows first
(:func:`rakuten.models.embed.with_embeddings`, told which encoders by :func:`encoders`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from rakuten.contracts import embeddings
from rakuten.contracts.classes import CLASS_CODES, N_CLASSES
from rakuten.core.config import knob, parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path
from rakuten.runtime.knobs import TorchKnobs
from rakuten.runtime.torch_setup import (
    Runtime,
    choose_runtime,
    class_weights,
    frame_labels,
    read_meta,
    seed_everything,
    set_threads,
    softmax_proba,
)
from rakuten.runtime.training import EpochOutcome, LoopSettings, best_entry, fit, history_rows

log = logging.getLogger(__name__)

NAME = "joint"
FUSIONS = ("concat", "gated")
DEFAULT_ENCODERS = {"text": "camembert", "image": "resnet50"}
META_FILE, WEIGHTS_FILE = "joint.json", "weights.pt"
PREDICT_BATCH = 4096


@dataclass(frozen=True)
class JointConfig(TorchKnobs):
    """``joint``: the head on the cached embeddings (``dvc exp run -S joint.hidden=512`` reruns only ``joint``)."""

    hidden: int = knob(256, "width of each modality's projection and of the MLP's hidden layer", lo=4, hi=8192)
    fusion: str = knob(
        "concat",
        "concat = [text; image] into the MLP | gated = a learnt per-dimension mix g * text + (1 - g) * image",
        choices=FUSIONS,
    )
    dropout: float = knob(0.2, "dropout before each layer of the MLP", lo=0.0, hi=0.9)
    epochs: int = knob(40, "max training epochs; the best epoch on val weighted F1 is kept", lo=1, hi=1000)
    batch_size: int = knob(128, "training batch size", lo=1, hi=65536)
    learning_rate: float = knob(0.001, "AdamW learning rate", lo=0.0, hi=1.0, lo_open=True)
    weight_decay: float = knob(0.0001, "AdamW weight decay", lo=0.0, hi=1.0)
    patience: int = knob(6, "early stopping: epochs without a better val weighted F1", lo=1, hi=1000)
    modality_dropout: float = knob(
        0.15,
        "probability, per complete training row, of zeroing one modality "
        "(text or image, even odds), so the head copes with a missing input",
        lo=0.0,
        hi=1.0,
    )
    class_weighting: str = knob(
        "none", "none | balanced (cross-entropy weights n / (k * n_class))", choices=("none", "balanced")
    )
    seed: int = knob(42, "seed of initialisation, shuffling, dropout and modality dropout", lo=0)


class JointHead(torch.nn.Module):
    """Per-modality LayerNorm + Linear projection, concat or gated mix, MLP -> 27 logits."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float, fusion: str = "concat"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion {fusion!r}, expected one of {FUSIONS}")
        self.fusion = fusion
        self.text = torch.nn.Sequential(
            torch.nn.LayerNorm(text_dim), torch.nn.Linear(text_dim, hidden), torch.nn.GELU()
        )
        self.image = torch.nn.Sequential(
            torch.nn.LayerNorm(image_dim), torch.nn.Linear(image_dim, hidden), torch.nn.GELU()
        )
        self.gate = torch.nn.Linear(2 * hidden, hidden) if fusion == "gated" else None
        width = 2 * hidden if fusion == "concat" else hidden
        self.mlp = torch.nn.Sequential(
            torch.nn.Dropout(dropout),
            torch.nn.Linear(width, hidden),
            torch.nn.GELU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, N_CLASSES),
        )

    def forward(
        self, text: torch.Tensor, image: torch.Tensor, text_mask: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits; ``*_mask`` (n,) is 1 where the modality is used, 0 where it is missing or dropped."""
        ht = self.text(text) * text_mask[:, None]
        hi = self.image(image) * image_mask[:, None]
        both = torch.cat([ht, hi], dim=1)
        if self.gate is None:
            return self.mlp(both)
        # one modality missing: all weight on the other; both present: the learnt gate
        g = torch.sigmoid(self.gate(both)) * (text_mask * image_mask)[:, None] + (text_mask * (1 - image_mask))[:, None]
        return self.mlp(g * ht + (1 - g) * hi)


@dataclass
class JointModel:
    """The trained head, its config, the embedding widths and encoders it expects, val history and rows."""

    net: JointHead
    config: JointConfig
    dims: dict[str, int]
    encoders: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENCODERS))
    history: list[dict] = field(default_factory=list)
    rows: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ inputs


@dataclass
class Inputs:
    """A frame's embeddings and masks as tensors (missing or dropped modality: mask 0)."""

    text: torch.Tensor
    image: torch.Tensor
    text_mask: torch.Tensor
    image_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.text)

    def to(self, device: str) -> "Inputs":
        return Inputs(*(t.to(device) for t in (self.text, self.image, self.text_mask, self.image_mask)))

    def rows(self, idx: torch.Tensor) -> "Inputs":
        return Inputs(self.text[idx], self.image[idx], self.text_mask[idx], self.image_mask[idx])


def frame_inputs(frame: pd.DataFrame, dims: Mapping[str, int] | None = None) -> Inputs:
    """The embeddings ``frame`` carries (``text_embedding``, ``image_embedding``, ``text_ok``, ``image_ok``).

    A row with neither input usable keeps both (embeddings of blank input), as fusion does. ``dims``:
    the widths a trained head expects; other widths are one line (embeddings from other encoders).
    """
    text, image = embeddings.matrix(frame, "text"), embeddings.matrix(frame, "image")
    for modality, m in (("text", text), ("image", image)):
        if dims is not None and len(m) and m.shape[1] != dims[modality]:
            raise PipelineError(
                f"model frame, column {embeddings.MODALITY_COLUMNS[modality]}: {m.shape[1]} dims, "
                f"expected {dims[modality]} as the joint model was trained with (rerun "
                f"`dvc repro {embeddings.STAGE} {NAME}`)"
            )
    text_ok, image_ok = embeddings.flags(frame)
    neither = ~text_ok & ~image_ok
    text_ok, image_ok = text_ok | neither, image_ok | neither
    return Inputs(
        torch.from_numpy(np.ascontiguousarray(text)),
        torch.from_numpy(np.ascontiguousarray(image)),
        torch.from_numpy(text_ok.astype(np.float32)),
        torch.from_numpy(image_ok.astype(np.float32)),
    )


def drop_modality(inputs: Inputs, p: float, gen: torch.Generator) -> Inputs:
    """Masks with one modality (text or image, even odds) zeroed on each complete row with probability ``p``."""
    n = len(inputs)
    drop = (torch.rand(n, generator=gen) < p).float() * inputs.text_mask * inputs.image_mask
    pick_text = (torch.rand(n, generator=gen) < 0.5).float()
    return Inputs(
        inputs.text,
        inputs.image,
        inputs.text_mask * (1 - drop * pick_text),
        inputs.image_mask * (1 - drop * (1 - pick_text)),
    )


# ---------------------------------------------------------------------------------------- training


def _logits(net: JointHead, inputs: Inputs, runtime: Runtime, batch: int = PREDICT_BATCH) -> np.ndarray:
    """The head's logits over ``inputs`` in batches of ``batch`` rows (eval mode, no gradients)."""
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch):
            part = inputs.rows(torch.arange(start, min(start + batch, len(inputs)))).to(runtime.device)
            with runtime.autocast():
                out.append(net(part.text, part.image, part.text_mask, part.image_mask).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES))


@dataclass
class _Epochs:
    """One epoch of the head for :func:`rakuten.runtime.training.fit`: a seeded shuffle, fresh modality dropout,
    AdamW steps over the batches, then the logits of the val rows."""

    net: JointHead
    cfg: JointConfig
    runtime: Runtime
    train_in: Inputs
    val_in: Inputs
    y: torch.Tensor
    gen: torch.Generator
    optimizer: torch.optim.Optimizer
    weight: torch.Tensor | None

    def run(self, epoch: int) -> EpochOutcome:
        """Train epoch ``epoch``; its mean train loss and the val logits."""
        net, cfg, device = self.net, self.cfg, self.runtime.device
        net.train()
        order = torch.randperm(len(self.y), generator=self.gen)
        masked = drop_modality(self.train_in, cfg.modality_dropout, self.gen)
        loss_sum = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            batch, target = masked.rows(idx).to(device), self.y[idx].to(device)
            with self.runtime.autocast():
                logits = net(batch.text, batch.image, batch.text_mask, batch.image_mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), target, weight=self.weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
        return EpochOutcome(loss_sum / len(self.y), _logits(net, self.val_in, self.runtime))


def _row_accounting(train_in: Inputs, n_train: int, n_val: int) -> dict:
    """Train and val rows, and the train rows whose text or image is missing (that modality zeroed)."""
    return {
        "train_rows": int(n_train),
        "val_rows": int(n_val),
        "train_rows_text_missing": int((train_in.text_mask == 0).sum()),
        "train_rows_image_missing": int((train_in.image_mask == 0).sum()),
    }


def train(
    train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: JointConfig, encoders: Mapping[str, str] | None = None
) -> JointModel:
    """Fit the head on ``train_frame``'s embeddings; keep the epoch with the best val weighted F1.

    ``encoders``: which stage models made the embeddings (``embeddings.json``), saved with the model
    so ``rakuten predict`` embeds new rows with the same ones.
    """
    runtime = choose_runtime(cfg.device, cfg.precision)
    threads = set_threads(cfg.num_threads)
    if len(train_frame) == 0 or len(val_frame) == 0:
        raise PipelineError(f"joint: {len(train_frame)} train and {len(val_frame)} val rows; expected both non-empty")
    train_in = frame_inputs(train_frame)
    dims = {"text": int(train_in.text.shape[1]), "image": int(train_in.image.shape[1])}
    val_in = frame_inputs(val_frame, dims)
    labels, val_labels = frame_labels(train_frame), frame_labels(val_frame)
    rows = _row_accounting(train_in, len(train_frame), len(val_frame))
    log.info(
        "joint (%s, hidden %d): %d train / %d val rows, text %d + image %d dims, on %s %s, %d CPU threads",
        *(cfg.fusion, cfg.hidden, len(train_frame), len(val_frame), dims["text"], dims["image"]),
        *(runtime.device, runtime.precision, threads),
    )
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = JointHead(dims["text"], dims["image"], cfg.hidden, cfg.dropout, cfg.fusion).to(runtime.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    weight = (
        torch.tensor(class_weights(labels), dtype=torch.float32, device=runtime.device)
        if cfg.class_weighting == "balanced"
        else None
    )
    epochs = _Epochs(net, cfg, runtime, train_in, val_in, torch.from_numpy(labels), gen, optimizer, weight)
    loop = LoopSettings(cfg.epochs, cfg.patience, NAME, epoch_log_level=logging.DEBUG, progress=True)
    fitted = fit(net, epochs.run, val_labels, loop)
    net.load_state_dict(fitted.best_state)
    best = best_entry(fitted.history)
    rows.update(history_rows(fitted.history))
    log.info(
        "joint: best val weighted F1 %.4f at epoch %d of %d", best["weighted_f1"], best["epoch"], rows["epochs_run"]
    )
    return JointModel(
        net=net.eval(),
        config=cfg,
        dims=dims,
        encoders=dict(encoders or DEFAULT_ENCODERS),
        history=fitted.history,
        rows=rows,
    )


def training_report(model: JointModel) -> dict:
    """What the stage writes to ``reports/training/joint.json``: shapes, encoders, rows, per-epoch val scores."""
    return {
        "fusion": model.config.fusion,
        "hidden": model.config.hidden,
        "dims": model.dims,
        "encoders": model.encoders,
        "rows": dict(model.rows),
        "history": model.history,
    }


# --------------------------------------------------------------------------------------- inference


def predict_proba(model: JointModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) class probabilities from the embeddings ``frame`` carries (see :func:`frame_inputs`)."""
    if len(frame) == 0:
        return np.zeros((0, N_CLASSES))
    device = next(model.net.parameters()).device
    runtime = Runtime("cpu", "fp32") if device.type == "cpu" else choose_runtime("cuda", model.config.precision)
    # one row per pass on CPU: a batched matrix product rounds a row differently with the batch's size, and a
    # product must score the same alone, in a stream's chunk, in the service's batch or on another worker
    batch = 1 if runtime.device == "cpu" else PREDICT_BATCH
    return softmax_proba(_logits(model.net, frame_inputs(frame, model.dims), runtime, batch))


def encoders(model: JointModel) -> dict[str, str]:
    """The stage models whose embeddings the head reads (``rakuten predict`` embeds new rows with them)."""
    return dict(model.encoders)


# ------------------------------------------------------------------------------------- persistence


def save(model: JointModel, directory: str | Path) -> None:
    """``weights.pt`` (state dict) and ``joint.json`` (config, dims, encoders, val history, rows); atomic."""
    meta = {
        "config": asdict(model.config),
        "dims": model.dims,
        "encoders": model.encoders,
        "history": model.history,
        "rows": model.rows,
        "class_codes": list(CLASS_CODES),
    }
    with atomic_path(directory, is_dir=True) as tmp:
        torch.save({k: v.cpu() for k, v in model.net.state_dict().items()}, tmp / WEIGHTS_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load(directory: str | Path) -> JointModel:
    """Load a model saved by :func:`save` onto CUDA when present, else CPU."""
    directory = Path(directory)
    meta = read_meta(directory / META_FILE, directory / WEIGHTS_FILE, "joint head", NAME)
    cfg = parse_section(JointConfig, meta["config"], NAME, source=str(directory / META_FILE))
    dims = meta.get("dims") or {}
    if not all(isinstance(dims.get(m), int) and dims[m] > 0 for m in ("text", "image")):
        raise PipelineError(f"{directory / META_FILE}: missing key dims.text / dims.image; rerun `dvc repro {NAME}`")
    set_threads(cfg.num_threads)  # predictions with the numerics the model was trained with, on any machine
    net = JointHead(dims["text"], dims["image"], cfg.hidden, cfg.dropout, cfg.fusion)
    net.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    runtime = choose_runtime("auto", "auto")
    return JointModel(
        net=net.to(runtime.device).eval(),
        config=cfg,
        dims=dims,
        encoders=dict(meta.get("encoders") or DEFAULT_ENCODERS),
        history=meta.get("history", []),
        rows=meta.get("rows", {}),
    )

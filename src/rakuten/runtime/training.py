"""The epoch loop every hand-written torch model shares: validate each epoch, keep the best, stop early.

Why one loop: the ResNet image model and the joint head both train for at most ``epochs`` epochs,
score validation weighted F1 after each, keep a copy of the weights of the best epoch, stop after
``patience`` epochs without a better one, and record the same per-epoch history (and, for the
stages that ask, dvclive curves). Written twice, the two copies drifted apart in small ways; here
the model supplies only its own epoch (:data:`RunEpoch`: train, then the validation logits).

Under torchrun (``synced``) rank 0 alone validates and decides; the other ranks train their share
and learn after each epoch whether to stop (:func:`rakuten.runtime.distributed.broadcast`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from rakuten.contracts.classes import indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.runtime import distributed

log = logging.getLogger(__name__)

#: the validation scores of each epoch that go into the history and the dvclive ``val/`` curves
VAL_SCORES = ("weighted_f1", "macro_f1", "accuracy")


class EpochOutcome(NamedTuple):
    """What a model's epoch hands back: its mean training loss and its logits on the validation rows."""

    train_loss: float
    val_logits: np.ndarray


#: ``run_epoch(epoch)``: train one epoch (1-based) and validate; None on a rank that does not validate
RunEpoch = Callable[[int], "EpochOutcome | None"]


@dataclass
class BestEpoch:
    """The best validation weighted F1 so far, a copy of the weights that reached it, and the epochs since."""

    patience: int
    f1: float = -1.0
    state: dict[str, Any] | None = None
    stale: int = 0

    def update(self, f1: float, net: torch.nn.Module) -> bool:
        """Record an epoch's F1 (a copy of ``net``'s weights when it is the best); True = stop now."""
        if f1 > self.f1:
            self.f1, self.state, self.stale = f1, copy.deepcopy(net.state_dict()), 0
            return False
        self.stale += 1
        return self.stale >= self.patience


@dataclass
class Fitted:
    """The per-epoch history and the best epoch's weights (None on a rank that did not validate)."""

    history: list[dict] = field(default_factory=list)
    best_state: dict[str, Any] | None = None


def epoch_entry(epoch: int, outcome: EpochOutcome, val_labels: np.ndarray) -> dict:
    """One history row: epoch, train and val loss (6 decimals), val weighted/macro F1 and accuracy."""
    logits = outcome.val_logits
    val_loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)))
    return {
        "epoch": epoch,
        "train_loss": round(outcome.train_loss, 6),
        "val_loss": round(val_loss, 6),
        **scores(indices_to_codes(val_labels), indices_to_codes(logits.argmax(axis=1))),
    }


def history_rows(history: list[dict]) -> dict[str, int]:
    """The row-accounting keys of a finished run: the best epoch (by val weighted F1) and the epochs run."""
    return {"best_epoch": int(best_entry(history)["epoch"]), "epochs_run": len(history)}


def best_entry(history: list[dict]) -> dict:
    """The history row with the best val weighted F1 (the first of equals)."""
    return max(history, key=lambda h: h["weighted_f1"])


def open_live(live_dir: str | Path | None):
    """A dvclive logger writing into ``live_dir`` (None: no curves); inside a DVC stage it neither commits
    experiments nor edits dvc.yaml."""
    if not live_dir:
        return None
    from dvclive import Live

    return Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False)


def log_live(live, entry: dict, optimizer: torch.optim.Optimizer | None) -> None:
    """One dvclive step: train/val loss, the val scores and the optimiser's current learning rate."""
    live.log_metric("train/loss", entry["train_loss"])
    live.log_metric("val/loss", entry["val_loss"])
    for m in VAL_SCORES:
        live.log_metric(f"val/{m}", entry[m])
    if optimizer is not None:
        live.log_metric("learning_rate", optimizer.param_groups[0]["lr"])
    live.next_step()


@dataclass
class LoopSettings:
    """How :func:`fit` runs: the bounds, the name in the logs, and what it reports where."""

    epochs: int
    patience: int
    name: str
    live_dir: str | Path | None = None  # dvclive curves (None: none; give it on rank 0 only)
    optimizer: torch.optim.Optimizer | None = None  # its learning rate goes into the curves
    synced: bool = False  # torchrun: rank 0 validates and broadcasts its stop decision
    epoch_log_level: int = logging.INFO
    progress: bool = False  # a progress bar over the epochs (shown from 5 epochs on)


def fit(net: torch.nn.Module, run_epoch: RunEpoch, val_labels: np.ndarray, loop: LoopSettings) -> Fitted:
    """Run ``run_epoch`` for epochs 1.. ``loop.epochs``; after each, score it on ``val_labels``, keep a copy of
    ``net``'s weights when val weighted F1 is the best so far, stop after ``loop.patience`` epochs without one."""
    live = open_live(loop.live_dir)
    fitted, best = Fitted(), BestEpoch(loop.patience)
    epochs = range(1, loop.epochs + 1)
    if loop.progress:
        epochs = tqdm(epochs, desc=f"{loop.name} epochs", leave=False, disable=loop.epochs < 5)
    for epoch in epochs:
        outcome = run_epoch(epoch)
        if outcome is None:  # a rank that trains its share only: rank 0 says whether to go on
            if distributed.broadcast(None):
                break
            continue
        entry = epoch_entry(epoch, outcome, val_labels)
        fitted.history.append(entry)
        log.log(
            loop.epoch_log_level,
            "%s epoch %d: train loss %.4f, val loss %.4f, val weighted F1 %.4f",
            loop.name,
            epoch,
            entry["train_loss"],
            entry["val_loss"],
            entry["weighted_f1"],
        )
        if live is not None:
            log_live(live, entry, loop.optimizer)
        stop = best.update(entry["weighted_f1"], net)
        if stop:
            log.info("%s: early stop after epoch %d (no val improvement for %d epochs)", loop.name, epoch, best.stale)
        if loop.synced:
            distributed.broadcast(stop)
        if stop:
            break
    if live is not None:
        live.end()
    fitted.best_state = best.state
    return fitted

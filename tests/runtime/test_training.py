"""The epoch loop the hand-written torch models share (``rakuten.runtime.training``): history rows, the best
epoch's weights kept as a copy, patience, dvclive curves, and rank 0 deciding for every rank under torchrun.

A fake epoch stands for a model: it moves a tiny network's weights and returns logits whose validation
weighted F1 follows a script, so every decision of the loop is known in advance.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from rakuten.contracts.classes import N_CLASSES
from rakuten.runtime import distributed
from rakuten.runtime import training as T

VAL_LABELS = np.arange(8) % N_CLASSES


def _logits(correct: int) -> np.ndarray:
    """Validation logits with the first ``correct`` of the 8 rows right (the others one class off)."""
    pred = VAL_LABELS.copy()
    pred[correct:] = (pred[correct:] + 1) % N_CLASSES
    out = np.zeros((len(VAL_LABELS), N_CLASSES), dtype=np.float32)
    out[np.arange(len(pred)), pred] = 5.0
    return out


class ScriptedEpochs:
    """Epoch ``e`` sets the net's weight to ``e`` and scores ``correct[e - 1]`` val rows right."""

    def __init__(self, correct: list[int]):
        self.net, self.correct, self.ran = torch.nn.Linear(1, 1), correct, []

    def run(self, epoch: int) -> T.EpochOutcome:
        self.ran.append(epoch)
        with torch.no_grad():
            self.net.weight.fill_(float(epoch))
        return T.EpochOutcome(1.0 / epoch, _logits(self.correct[epoch - 1]))


def _fit(correct: list[int], patience: int, **settings) -> tuple[T.Fitted, ScriptedEpochs]:
    epochs = ScriptedEpochs(correct)
    loop = T.LoopSettings(len(correct), patience, "toy", **settings)
    return T.fit(epochs.net, epochs.run, VAL_LABELS, loop), epochs


def test_history_rows_and_the_best_epochs_weights_as_a_copy():
    fitted, epochs = _fit([2, 6, 4, 8], patience=5)
    assert [h["epoch"] for h in fitted.history] == [1, 2, 3, 4] and epochs.ran == [1, 2, 3, 4]
    first = fitted.history[0]
    assert set(first) == {"epoch", "train_loss", "val_loss", "weighted_f1", "macro_f1", "accuracy"}
    assert first["train_loss"] == 1.0 and first["accuracy"] == pytest.approx(0.25)
    assert fitted.best_state["weight"].item() == 4.0  # epoch 4 is the best; a copy, not the live tensor
    assert epochs.net.weight.item() == 4.0 and fitted.best_state["weight"] is not epochs.net.state_dict()["weight"]
    assert T.history_rows(fitted.history) == {"best_epoch": 4, "epochs_run": 4}


def test_patience_stops_after_epochs_without_a_better_f1_and_keeps_the_best():
    fitted, epochs = _fit([6, 2, 6, 3, 8, 8], patience=3)
    assert epochs.ran == [1, 2, 3, 4]  # epochs 2, 3, 4 no better than 1 (equal is not better)
    assert fitted.best_state["weight"].item() == 1.0
    assert T.history_rows(fitted.history) == {"best_epoch": 1, "epochs_run": 4}
    assert T.best_entry(fitted.history)["epoch"] == 1


def test_dvclive_curves_and_the_learning_rate(tmp_path, caplog):
    net = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.25)
    with caplog.at_level(logging.INFO, logger="rakuten.runtime.training"):
        fitted, _ = _fit([2, 4, 1], patience=1, live_dir=tmp_path / "live", optimizer=optimizer)
    curves = tmp_path / "live" / "plots" / "metrics"
    for name in ("train/loss.tsv", "val/loss.tsv", "val/weighted_f1.tsv", "val/accuracy.tsv", "learning_rate.tsv"):
        assert len(pd.read_csv(curves / name, sep="\t")) == len(fitted.history) == 3, name
    assert pd.read_csv(curves / "learning_rate.tsv", sep="\t")["learning_rate"].tolist() == [0.25] * 3
    assert "toy: early stop after epoch 3 (no val improvement for 1 epochs)" in caplog.text


def test_a_rank_that_does_not_validate_follows_rank_0s_decision(monkeypatch):
    decisions = iter([False, False, True])  # what rank 0 broadcasts after each epoch
    heard = []

    def broadcast(value):
        heard.append(value)
        return next(decisions)

    monkeypatch.setattr(distributed, "broadcast", broadcast)
    ran = []
    fitted = T.fit(
        torch.nn.Linear(1, 1), lambda e: ran.append(e), VAL_LABELS, T.LoopSettings(10, 2, "toy", synced=True)
    )
    assert ran == [1, 2, 3] and heard == [None, None, None]
    assert fitted.history == [] and fitted.best_state is None


def test_rank_0_broadcasts_each_decision_when_synced(monkeypatch):
    told = []
    monkeypatch.setattr(distributed, "broadcast", lambda value: told.append(value) or value)
    _fit([5, 1, 1], patience=2, synced=True)
    assert told == [False, False, True]
    told.clear()
    _fit([5, 1, 1], patience=2)  # one process: nothing to tell
    assert told == []

"""Fine-tuning of the text model with the Hugging Face ``Trainer``: rows, encoder, datasets, then ``train()``.

Batches are padded per batch (dynamic padding); ``group_by_length`` also draws length-grouped batches,
which removes most padding since most products are short. ``lora.r > 0`` fine-tunes low-rank adapters
(``peft``) and merges them before saving, so the saved model is a plain Hugging Face model. Validation
weighted F1 is computed every epoch and the best epoch's weights are kept (``load_best_model_at_end``);
learning curves go to dvclive through its Hugging Face callback. Started by torchrun, the Trainer runs
DDP over the ranks with the global batch split evenly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from rakuten.models.camembert.config import SCRATCH, CamembertConfig, CamembertModel
from rakuten.models.camembert.data import EncodedTexts, encode, frame_texts
from rakuten.models.camembert.encoder import add_lora, build_model, merge_lora
from rakuten.models.camembert.trainer_setup import (
    checkpoint_dir,
    compute_metrics,
    live_callback,
    training_arguments,
    weighted_loss,
)
from rakuten.runtime import distributed
from rakuten.runtime.distributed import World
from rakuten.runtime.torch_setup import (
    Runtime,
    choose_runtime,
    class_weights,
    frame_labels,
    seed_everything,
    set_threads,
    stratified_cap,
)

log = logging.getLogger(__name__)


def train_rows(train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: CamembertConfig) -> tuple[pd.DataFrame, dict]:
    """The train rows kept (all, or a stratified ``max_train_rows`` subset) and the row accounting."""
    keep = stratified_cap(train_frame["prdtypecode"].to_numpy(dtype=np.int64), cfg.max_train_rows, cfg.seed)
    if len(keep) < len(train_frame):
        log.info(
            "camembert: max_train_rows = %d keeps %d of %d train rows (stratified)",
            cfg.max_train_rows,
            len(keep),
            len(train_frame),
        )
    rows = {
        "train_rows": int(len(train_frame)),
        "dropped_max_train_rows": int(len(train_frame) - len(keep)),
        "train_rows_used": int(len(keep)),
        "val_rows": int(len(val_frame)),
    }
    return train_frame.iloc[keep], rows


def build_trainer(
    cfg: CamembertConfig,
    runtime: Runtime,
    model: Any,
    tokenizer: Any,
    datasets: tuple[EncodedTexts, EncodedTexts],
    output_dir: str,
    here: World | None = None,
    live_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
):
    """The ``Trainer`` of a run: :func:`training_arguments`, dynamic padding, val weighted F1 each epoch,
    the class-weighted loss when asked, dvclive curves when ``live_dir`` is given. ``overrides``: arguments
    that replace the run's (bench/: ``max_steps``, no evaluation or checkpoints); training never passes any."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    here = here or World()
    train_ds, val_ds = datasets
    loss_func = None
    if cfg.class_weighting == "balanced":
        loss_func = weighted_loss(torch.tensor(class_weights(train_ds.labels), dtype=torch.float32))
    return Trainer(
        model=model,
        args=TrainingArguments(
            **{**training_arguments(cfg, runtime, len(train_ds), output_dir, here.size), **(overrides or {})}
        ),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        compute_loss_func=loss_func,
        callbacks=live_callback(live_dir),
    )


def _history(log_history: list[dict]) -> list[dict]:
    """The per-epoch val scores of the Trainer's log: epoch (3 decimals), weighted/macro F1, accuracy, loss."""
    return [
        {
            "epoch": round(float(e["epoch"]), 3),
            **{m: e[f"eval_{m}"] for m in ("weighted_f1", "macro_f1", "accuracy", "loss")},
        }
        for e in log_history
        if "eval_weighted_f1" in e
    ]


def train(
    train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: CamembertConfig, live_dir: str | Path | None = None
) -> CamembertModel:
    """Fine-tune on ``train_frame``; evaluate weighted F1 on ``val_frame`` each epoch; keep the best epoch.

    ``live_dir``: where dvclive writes the learning curves (None = no curves; rank 0 only when
    started by torchrun: the Trainer then runs DDP over the ranks with the global batch split evenly).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    runtime = choose_runtime(cfg.device, cfg.precision)
    here = distributed.init(runtime.device)
    threads = set_threads(cfg.num_threads)
    train_frame, rows = train_rows(train_frame, val_frame, cfg)
    texts, labels = frame_texts(train_frame, cfg.text_column), frame_labels(train_frame)
    val_texts, val_labels = frame_texts(val_frame, cfg.text_column), frame_labels(val_frame)
    log.info(
        "camembert (%s profile, %s): %d train / %d val rows on %s %s, %d CPU threads%s",
        cfg.profile,
        cfg.model,
        len(texts),
        len(val_texts),
        runtime.device,
        runtime.precision,
        threads,
        f", rank {here.rank} of {here.size}" if here.distributed else "",
    )

    seed_everything(cfg.seed)
    tokenizer, model = build_model(cfg, texts)
    if cfg.lora.r:
        model = add_lora(model, cfg.lora)
    train_ds = EncodedTexts(encode(tokenizer, texts, cfg.max_length), labels)
    val_ds = EncodedTexts(encode(tokenizer, val_texts, cfg.max_length), val_labels)
    with checkpoint_dir(here) as ckpt_dir:
        live = live_dir if here.is_main else None
        trainer = build_trainer(cfg, runtime, model, tokenizer, (train_ds, val_ds), ckpt_dir, here, live)
        if here.distributed:  # accelerate may set its own thread count for CPU ranks: keep the param's
            set_threads(cfg.num_threads)
        trainer.train()
        model = merge_lora(trainer.model)
    history = _history(trainer.state.log_history)
    best = max(history, key=lambda h: h["weighted_f1"]) if history else {}
    log.info(
        "camembert: best val weighted F1 %.4f at epoch %s", best.get("weighted_f1", float("nan")), best.get("epoch")
    )
    return CamembertModel(model=model.eval(), tokenizer=tokenizer, config=cfg, history=history, rows=rows)


def training_report(model: CamembertModel) -> dict:
    """What the stage writes to ``reports/training/camembert.json``: profile, rows, per-epoch val scores."""
    cfg = model.config
    best = max(model.history, key=lambda h: h["weighted_f1"]) if model.history else {}
    family = cfg.scratch.model_type if cfg.model == SCRATCH else None
    return {
        "profile": cfg.profile,
        "model": cfg.model,
        "scratch_model_type": family,
        "lora_r": cfg.lora.r,
        "max_length": cfg.max_length,
        "epochs": cfg.epochs,
        "rows": dict(model.rows),
        "best_epoch": best.get("epoch"),
        "history": model.history,
    }

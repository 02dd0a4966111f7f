"""Fine-tuning of the image model: the rows and their weights, the network and its data, one optimiser step.

Training follows the study: a new 27-class head, AdamW with a one-cycle schedule, augmentations,
class rebalancing (loss class weights, a weighted sampler, or none), the per-image ``sample_weight``
of image_clean, rows with ``keep_for_train = False`` left out (counted). The epochs themselves (early
stopping on validation weighted F1, the best epoch's weights kept, dvclive curves) are the loop every
hand-written torch model shares, :func:`rakuten.runtime.training.fit`.

Started by torchrun with N processes: DDP, each rank ``batch_size / N`` rows of its disjoint share,
the loss the global weighted mean; rank 0 alone validates, logs and decides early stopping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rakuten.core.errors import PipelineError
from rakuten.models.resnet50.backbones import Norm, backbone_library, backbone_norm, make_net, resolve_weights
from rakuten.models.resnet50.config import ResnetConfig, ResnetModel
from rakuten.models.resnet50.data import CachedRows, ImageRows, build_transform, decode_images, make_loader
from rakuten.models.resnet50.frame import image_paths, usable_train_rows
from rakuten.models.resnet50.inference import batch_logits, memory_format
from rakuten.models.resnet50.parallel import global_sum, train_sampler, wrap_ddp
from rakuten.runtime import distributed
from rakuten.runtime.distributed import World
from rakuten.runtime.torch_setup import (
    Runtime,
    choose_runtime,
    class_weights,
    frame_labels,
    seed_everything,
    set_threads,
    threads,
)
from rakuten.runtime.training import EpochOutcome, LoopSettings, fit, history_rows

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- rows


@dataclass
class TrainRows:
    """The rows the network learns from, their accounting, labels, loss weights and (sampler) draw weights."""

    frame: pd.DataFrame
    rows: dict
    labels: np.ndarray
    loss_weights: np.ndarray
    draw_weights: np.ndarray | None


def train_rows(train_frame: pd.DataFrame, cfg: ResnetConfig) -> TrainRows:
    """The usable train rows with their weights: ``sample_weight`` (if used) times the class weight in the loss
    (``rebalance: class_weights``), or drawn by a weighted sampler with an unweighted loss (``sampler``)."""
    usable, rows = usable_train_rows(train_frame, cfg)
    if usable.empty:
        raise PipelineError("resnet50: no usable train rows (all have keep_for_train = False or unreadable images)")
    labels = frame_labels(usable)
    sample_w = usable["sample_weight"].to_numpy(dtype=np.float64) if cfg.use_sample_weights else np.ones(len(usable))
    if (sample_w < 0).any() or not np.isfinite(sample_w).all():
        raise PipelineError(
            f"column sample_weight: row_id {usable['row_id'].iloc[int(np.argmin(sample_w))]} has "
            "a negative or non-finite weight; expected weights >= 0"
        )
    cw = class_weights(labels)
    draw_w = None
    if cfg.rebalance == "sampler":  # balance by drawing, so the loss stays unweighted by class
        draw_w = cw[labels] * sample_w
        sample_w = np.ones(len(labels))
    elif cfg.rebalance == "class_weights":
        sample_w = sample_w * cw[labels]
    return TrainRows(usable, rows, labels, sample_w, draw_w)


# ---------------------------------------------------------------------------------- network, data


def network(cfg: ResnetConfig, runtime: Runtime, weights_file: Path | None = None) -> tuple[torch.nn.Module, Norm]:
    """The 27-class network of ``cfg.arch`` on the runtime's device (channels-last where it applies), and the
    input statistics of its backbone."""
    net = make_net(cfg.arch, cfg.image_size, weights_file).to(runtime.device)
    if memory_format(cfg, runtime) == torch.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, backbone_norm(net, cfg.arch)


def train_datasets(
    cfg: ResnetConfig, norm: Norm, rows: TrainRows, val_frame: pd.DataFrame
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """(train, val) datasets: augmented / eval transforms, JPEGs decoded on the fly or once into RAM
    (``cache_images``); the val rows have weight 1 and their labels in ``.labels``."""
    train_transform, eval_transform = (
        build_transform(cfg.image_size, cfg.augment, norm),
        build_transform(cfg.image_size, None, norm),
    )
    train_paths, val_paths = image_paths(rows.frame), image_paths(val_frame)
    val_labels = frame_labels(val_frame)
    if not cfg.cache_images:
        return (
            ImageRows(train_paths, rows.labels, rows.loss_weights, train_transform, cfg.image_size),
            ImageRows(val_paths, val_labels, np.ones(len(val_frame)), eval_transform, cfg.image_size),
        )
    train_pixels = decode_images(train_paths, cfg.image_size, norm, cfg.num_workers, "decode train")
    train_ds = CachedRows(train_pixels, train_paths, rows.labels, rows.loss_weights, train_transform)
    val_pixels = decode_images(val_paths, cfg.image_size, norm, cfg.num_workers, "decode val")
    return train_ds, CachedRows(val_pixels, val_paths, val_labels, np.ones(len(val_frame)), eval_transform)


# --------------------------------------------------------------------------------------- one step


@dataclass
class StepParts:
    """What one optimiser step needs: the network the forward pass runs (plain, DDP-wrapped and/or compiled),
    the optimiser, its schedule and loss scaler, where it runs, and the process group."""

    step_net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    runtime: Runtime
    fmt: torch.memory_format = torch.contiguous_format
    here: World = World()


def optimiser(
    net: torch.nn.Module, cfg: ResnetConfig, runtime: Runtime, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.amp.GradScaler]:
    """AdamW, its one-cycle schedule over ``cfg.epochs`` epochs (20% warm-up), and the fp16 loss scaler."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.learning_rate, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2
    )
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.precision == "fp16")
    return optimizer, scheduler, scaler


def train_step(parts: StepParts, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """One optimiser step on a batch (images, class indices, row weights): the row-weighted mean
    cross-entropy (under torchrun: the global weighted mean over every rank's rows). Returns the batch's
    (sum of weighted losses, sum of weights), from which the epoch's mean train loss is made."""
    runtime, here = parts.runtime, parts.here
    x, y, w = x.to(runtime.device, non_blocking=True), y.to(runtime.device), w.to(runtime.device)
    if runtime.device == "cuda":
        x = x.contiguous(memory_format=parts.fmt)
    with runtime.autocast():
        per_row = torch.nn.functional.cross_entropy(parts.step_net(x).float(), y, reduction="none")
    denom = w.sum()
    if here.distributed:  # N x share / global weight: DDP's mean over ranks is the global weighted mean
        denom = global_sum(denom) / here.size
    loss = (per_row * w).sum() / denom.clamp_min(1e-12)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    return float((per_row * w).sum().detach()), float(w.sum())


# ------------------------------------------------------------------------------------------ epochs


@dataclass
class Epochs:
    """One epoch of the image model for :func:`rakuten.runtime.training.fit`: every batch of the train loader
    through :func:`train_step`, then (rank 0) the logits of the val rows."""

    parts: StepParts
    net: torch.nn.Module  # the plain network: validated, and its weights kept
    train_net: torch.nn.Module  # ``net`` or its DDP wrapper (train/eval mode)
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    sampler: torch.utils.data.Sampler | None = None
    is_timm: bool = False  # a timm backbone (its pooled features come from forward_head)

    def run(self, epoch: int) -> EpochOutcome | None:
        """Train epoch ``epoch``; rank 0 (or the only process) returns its mean loss and val logits."""
        here, runtime = self.parts.here, self.parts.runtime
        self.train_net.train()
        if here.distributed:
            self.sampler.set_epoch(epoch)
        loss_sum, weight_sum = 0.0, 0.0
        for x, y, w in tqdm(self.train_loader, desc=f"resnet epoch {epoch}", leave=False, disable=not here.is_main):
            batch_loss, batch_weight = train_step(self.parts, x, y, w)
            loss_sum += batch_loss
            weight_sum += batch_weight
        if here.distributed:  # the epoch's train loss over every rank's rows
            loss_sum, weight_sum = global_sum(
                torch.tensor([loss_sum, weight_sum], dtype=torch.float64, device=runtime.device)
            ).tolist()
            if not here.is_main:  # rank 0 validates and decides; the others wait for its decision
                return None
        with threads(0):  # scoring on every core: images one by one, head row by row, the same bits
            logits = batch_logits(self.net, self.val_loader, runtime, "resnet val", self.parts.fmt, self.is_timm)
        return EpochOutcome(loss_sum / max(weight_sum, 1e-12), logits)


# ------------------------------------------------------------------------------------------- train


def _log_start(cfg: ResnetConfig, rows: TrainRows, val_rows: int, runtime: Runtime, threads: int, here: World) -> None:
    log.info(
        "resnet (%s profile, %s %s, weights %s, %d px): %d train rows used %s, %d val rows on %s %s, %d CPU threads%s",
        cfg.profile,
        backbone_library(cfg.arch),
        cfg.arch,
        cfg.weights,
        cfg.image_size,
        len(rows.frame),
        rows.rows,
        val_rows,
        runtime.device,
        runtime.precision,
        threads,
        f", rank {here.rank} of {here.size}" if here.distributed else "",
    )


def train(
    train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: ResnetConfig, live_dir: str | Path | None = None
) -> ResnetModel:
    """Fine-tune on the usable train rows; early stopping on val weighted F1; best epoch's weights kept.

    ``live_dir``: where dvclive writes the learning curves (None = no curves). Under torchrun each rank
    calls it; rank 0's model is the result (the others return theirs without history).
    """
    runtime = choose_runtime(cfg.device, cfg.precision)
    weights_file = resolve_weights(cfg)  # before any work: fails offline in one line
    here = distributed.init(runtime.device)
    batch_size = distributed.per_rank_batch(cfg.batch_size, here.size, f"resnet50.{cfg.profile}.batch_size")
    threads = set_threads(cfg.num_threads)
    rows = train_rows(train_frame, cfg)
    _log_start(cfg, rows, len(val_frame), runtime, threads, here)

    seed_everything(cfg.seed)
    net, norm = network(cfg, runtime, weights_file)
    train_ds, val_ds = train_datasets(cfg, norm, rows, val_frame)
    train_net = wrap_ddp(net, runtime, here) if here.distributed else net  # DDP shares the parameters of ``net``
    net = train_net.module if here.distributed else net  # (SyncBatchNorm: a converted copy's layers)
    step_net = torch.compile(train_net) if cfg.compile else train_net  # shares the parameters of ``net``
    sampler = train_sampler(train_ds, rows.draw_weights, cfg, here)
    train_loader = make_loader(train_ds, batch_size, cfg, runtime, shuffle=True, sampler=sampler)
    val_loader = make_loader(val_ds, cfg.eval_batch_size, cfg, runtime)
    optimizer, scheduler, scaler = optimiser(net, cfg, runtime, len(train_loader))
    parts = StepParts(step_net, optimizer, scheduler, scaler, runtime, memory_format(cfg, runtime), here)
    epochs = Epochs(parts, net, train_net, train_loader, val_loader, sampler, backbone_library(cfg.arch) == "timm")
    loop = LoopSettings(
        cfg.epochs, cfg.patience, "resnet", live_dir if here.is_main else None, optimizer, synced=here.distributed
    )
    fitted = fit(net, epochs.run, val_ds.labels, loop)
    if not here.is_main:
        return ResnetModel(net=net.eval(), config=cfg, history=[], rows=rows.rows)
    if here.distributed:  # the plain network one process would have trained (BatchNorm, no DDP), best weights
        net, _ = network(cfg, runtime)
    net.load_state_dict(fitted.best_state)
    return ResnetModel(
        net=net.eval(),
        config=cfg,
        history=fitted.history,
        rows={**rows.rows, "val_rows": int(len(val_frame)), **history_rows(fitted.history)},
    )


def training_report(model: ResnetModel) -> dict:
    """What the stage writes to ``reports/training/resnet50.json``: profile, row accounting, val history."""
    cfg = model.config
    return {
        "profile": cfg.profile,
        "arch": cfg.arch,
        "library": backbone_library(cfg.arch),
        "weights": cfg.weights,
        "image_size": cfg.image_size,
        "rows": dict(model.rows),
        "history": model.history,
    }

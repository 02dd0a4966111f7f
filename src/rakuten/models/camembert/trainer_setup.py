"""What the Hugging Face ``Trainer`` is given: its arguments, the loss and metrics, the dvclive callback, the
checkpoint folder.

Why functions apart from ``train``: what the Trainer is told is checked by the tests without training,
and a rerun must write the same files (no timings, no temporary paths in the curves).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from rakuten.contracts.classes import indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.models.camembert.config import CamembertConfig
from rakuten.runtime import distributed
from rakuten.runtime.distributed import World
from rakuten.runtime.torch_setup import Runtime


def weighted_loss(weights: torch.Tensor):
    """The Trainer's loss with class weights (``class_weighting: balanced``): weighted cross-entropy in fp32."""

    def loss(outputs, labels, num_items_in_batch=None):  # noqa: ARG001 - Trainer's signature
        logits = outputs["logits"]
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weights.to(logits.device))

    return loss


def compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's validation scores (weighted / macro F1, accuracy) from its logits and labels."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return scores(indices_to_codes(labels), indices_to_codes(np.asarray(logits).argmax(axis=1)))


_TIMING_SUFFIXES = ("runtime", "samples_per_second", "steps_per_second")
# TrainingArguments that name this run's temporary checkpoint directory (transformers 4.x also
# derives logging_dir from it plus the date and host name, and run_name defaults to it)
_RUN_SPECIFIC_ARGS = ("output_dir", "logging_dir", "run_name")


def warmup_steps(n_rows: int, batch_size: int, epochs: int, ratio: float) -> int:
    """Learning-rate warm-up as a whole number of optimiser steps: ``ceil(ratio * total steps)``.

    Why not ``warmup_steps=ratio``: a float below 1 means a ratio only in recent transformers;
    older versions (the range allows 4.44) read it as 0.1 of a step. The total matches the
    Trainer's: ``epochs * ceil(n_rows / batch_size)`` (one device, no gradient accumulation).
    """
    total = epochs * math.ceil(n_rows / batch_size)
    return math.ceil(round(ratio * total, 9))


def loggable_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """TrainingArguments as dvclive records them, without the run's temporary paths (reruns write equal files)."""
    out_dir = str(args.get("output_dir") or "")
    return {
        k: v
        for k, v in args.items()
        if k not in _RUN_SPECIFIC_ARGS and not (out_dir and isinstance(v, str) and out_dir in v)
    }


def live_callback(live_dir: str | None):
    """The dvclive callback writing the curves into ``live_dir`` ([] for None), without wall-clock figures."""
    if not live_dir:
        return []
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class TimingFreeDVCLiveCallback(DVCLiveCallback):
        """Curves without wall-clock figures (runtime, samples/s): a rerun writes identical files."""

        def setup(self, args, state, model):
            self._initialized = True
            if state.is_world_process_zero:
                self.live.log_params(loggable_args(args.to_dict()))

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            logs = {k: v for k, v in (logs or {}).items() if not k.endswith(_TIMING_SUFFIXES)}
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    # inside a DVC stage: no experiment commits and no edits to dvc.yaml from dvclive itself
    return [TimingFreeDVCLiveCallback(live=Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False))]


def training_arguments(
    cfg: CamembertConfig, runtime: Runtime, n_rows: int, output_dir: str, world_size: int = 1
) -> dict[str, Any]:
    """The ``TrainingArguments`` of a run: the selected profile's schedule, length grouping, precision.

    Why a function: what the Trainer is told is checked by the tests without training. Length
    grouping is ``train_sampling_strategy`` in transformers 5 and ``group_by_length`` before.
    With ``world_size`` processes (torchrun) each device takes ``batch_size / world_size`` rows, so
    the global batch, the step count and the warm-up stay those of one process.
    """
    import inspect

    from transformers import TrainingArguments

    per_device = distributed.per_rank_batch(cfg.batch_size, world_size, f"camembert.{cfg.profile}.batch_size")
    args: dict[str, Any] = dict(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        eval_strategy="epoch",
        warmup_steps=warmup_steps(n_rows, cfg.batch_size, cfg.epochs, cfg.warmup_ratio),
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="weighted_f1",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=runtime.device == "cpu",
        bf16=runtime.precision == "bf16",
        fp16=runtime.precision == "fp16",
        report_to="none",
        dataloader_num_workers=0,
        torch_compile=cfg.compile,
    )
    parameters = inspect.signature(TrainingArguments).parameters
    if world_size > 1:  # every parameter of these classifiers gets a gradient: skip DDP's per-step graph search
        args.update(ddp_backend=distributed.backend(runtime.device), ddp_find_unused_parameters=False)
        if "average_tokens_across_devices" in parameters:
            # the Trainer multiplies the loss by the process count for models taking **kwargs, assuming a
            # token-summed loss; a classifier's loss is a batch mean, so that doubled the gradients (measured:
            # logged loss 6.5 = 2 x ln 27 at step 0); DDP's mean of per-rank means is already the global mean
            args["average_tokens_across_devices"] = False
    if cfg.group_by_length:
        if "train_sampling_strategy" in parameters:
            args["train_sampling_strategy"] = "group_by_length"
        else:  # transformers 4.x
            args["group_by_length"] = True
    return args


@contextmanager
def checkpoint_dir(here: World) -> Iterator[str]:
    """The Trainer's temporary checkpoint folder, one for all ranks: rank 0 creates it, tells the others,
    and removes it once every rank has loaded the best checkpoint from it (no race, nothing left)."""
    if not here.distributed:
        with tempfile.TemporaryDirectory(prefix="camembert-ckpt-") as path:
            yield path
        return
    path = distributed.broadcast(tempfile.mkdtemp(prefix="camembert-ckpt-") if here.is_main else None)
    try:
        yield path
        distributed.barrier()
    finally:
        if here.is_main:
            shutil.rmtree(path, ignore_errors=True)

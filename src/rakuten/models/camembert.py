"""Transformer text classifier (any Hugging Face encoder) fine-tuned with the Hugging Face ``Trainer``.

The stage keeps the study's name, ``camembert``, and its default model; ``model`` takes any Hugging
Face encoder id or local directory (camembert-base, camembert/camembert-large,
almanach/camembertav2-base, FacebookAI/xlm-roberta-base, flaubert/flaubert_base_cased, ...), resolved
by :mod:`rakuten.runtime.pretrained` (local dir -> HF cache -> hub, one-line error offline, never a silent
random init). Three profiles (``camembert.profile`` in params.yaml), same code path:

* ``full``: camembert-base with the study's 3 epochs, batch 16, weight decay 0.01;
* ``strongest``: camembert-large (the strongest text setting the published results justify);
* ``demo`` (default): ``model: scratch``, a small config of one encoder family (``scratch.model_type``:
  camembert, xlm-roberta, flaubert, deberta-v2, bert, roberta) trained from random init with a
  SentencePiece-style BPE tokenizer trained on the training texts (``tokenizers``); runs offline on
  2 CPU cores in minutes.

Batches are padded per batch (dynamic padding); ``group_by_length`` also draws length-grouped
batches, which removes most padding since most products are short. ``lora.r > 0`` fine-tunes
low-rank adapters (``peft``) instead of every weight and merges them before saving, so the saved
model is a plain Hugging Face model. Validation weighted F1 is computed every epoch and the best
epoch's weights are kept (``load_best_model_at_end``); learning curves go to dvclive through its
Hugging Face callback.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import torch

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, indices_to_codes
from rakuten.contracts.metrics import scores
from rakuten.core.config import ConfigError, ProfileView, knob, parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.io import atomic_path
from rakuten.runtime import distributed
from rakuten.runtime.distributed import World
from rakuten.runtime.knobs import CompileKnob, LaunchKnobs, TorchKnobs
from rakuten.runtime.torch_setup import (
    Runtime,
    choose_runtime,
    class_weights,
    frame_labels,
    read_meta,
    seed_everything,
    set_threads,
    softmax_proba,
    stratified_cap,
    write_meta,
)

log = logging.getLogger(__name__)

NAME = "camembert"
PROFILES = ("demo", "full", "strongest")
# encoder families a demo (scratch) config can take: Hugging Face ``model_type`` names
MODEL_TYPES = ("camembert", "xlm-roberta", "flaubert", "deberta-v2", "bert", "roberta")
SCRATCH = "scratch"
TEXT_COLUMNS = ("text_light", "text_norm")
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # CamemBERT's order: ids 0..4


@dataclass(frozen=True)
class ScratchArchitecture:
    """``camembert.<profile>.scratch``: the small encoder config of ``model: scratch`` (random init, own tokenizer)."""

    model_type: str = knob(
        "camembert",
        "encoder family (Hugging Face model_type): the same architecture as the pretrained model, at a tiny size",
        choices=MODEL_TYPES,
    )
    vocab_size: int = knob(8000, "BPE vocabulary trained on the train texts", lo=100, hi=250_000)
    hidden_size: int = knob(128, "hidden size (a multiple of num_heads)", lo=8, hi=4096)
    num_layers: int = knob(2, "transformer layers", lo=1, hi=48)
    num_heads: int = knob(4, "attention heads", lo=1, hi=64)
    intermediate_size: int = knob(512, "feed-forward size", lo=8, hi=16384)

    def validate(self, key: str) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{key}.hidden_size = {self.hidden_size}, expected a multiple of {key}.num_heads = {self.num_heads}"
            )


@dataclass(frozen=True)
class CamembertProfile:
    """``camembert.demo`` / ``camembert.full``: what differs between the two profiles (values: their defaults)."""

    model: str = knob(
        help="scratch = random init + a BPE tokenizer trained on the train texts (`tokenizers`); "
        "else a Hugging Face id or a local directory",
        nonempty=True,
    )
    local_dir: str = knob(
        help='pretrained weights are looked for here first ("" = models/pretrained/<id>), '
        "then in the HF cache, then on the hub"
    )
    scratch: ScratchArchitecture | None = knob(help="the architecture when model is scratch (absent otherwise)")
    max_length: int = knob(help="tokens per text (longer texts are truncated)", lo=8, hi=512)
    max_train_rows: int = knob(help="0 = all train rows; else a stratified subset", lo=0)
    epochs: int = knob(help="training epochs; the best epoch on val weighted F1 is kept", lo=1, hi=100)
    batch_size: int = knob(help="training batch size", lo=1, hi=4096)
    group_by_length: bool = knob(
        help="draw training batches of similar lengths (less padding; most products are short)"
    )
    learning_rate: float = knob(
        help="peak learning rate (from scratch needs a larger step than fine-tuning)", lo=0.0, hi=1.0, lo_open=True
    )
    weight_decay: float = knob(help="AdamW weight decay", lo=0.0, hi=1.0)
    warmup_ratio: float = knob(help="share of the training steps spent warming the learning rate up", lo=0.0, hi=0.99)

    def validate(self, key: str) -> None:
        if self.model == SCRATCH and self.scratch is None:
            raise ConfigError(f"missing key {key}.scratch (the architecture of {key}.model = {SCRATCH})")


@dataclass(frozen=True)
class LoraSettings:
    """``camembert.lora``: parameter-efficient fine-tuning (LoRA via ``peft``) for large encoders."""

    r: int = knob(0, "adapter rank; 0 = fine-tune every weight (no LoRA)", lo=0, hi=1024)
    alpha: float = knob(16.0, "LoRA scaling numerator (the update is scaled by alpha / r)", lo=0.0, lo_open=True)
    dropout: float = knob(0.1, "dropout on the adapter input", lo=0.0, hi=0.9)
    target_modules: tuple[str, ...] = knob(
        (), "module names that get adapters; [] = peft's default for the model family (attention query/value)"
    )


@dataclass(frozen=True)
class CamembertConfig(ProfileView, TorchKnobs, CompileKnob, LaunchKnobs):
    """``camembert``: shared knobs plus two profiles; ``cfg.epochs`` etc. read the selected profile."""

    profile: str = knob(
        "demo",
        "demo = small encoder config from scratch, offline CPU, minutes; full = "
        "camembert-base (the study): `dvc exp run -S camembert.profile=full`; strongest = "
        "camembert-large",
        choices=PROFILES,
    )
    text_column: str = knob("text_light", "input column of data/processed/text.parquet", choices=TEXT_COLUMNS)
    class_weighting: str = knob(
        "none", "none | balanced (cross-entropy weights n / (k * n_class))", choices=("none", "balanced")
    )
    eval_batch_size: int = knob(128, "batch size of evaluation and prediction", lo=1, hi=4096)
    logging_steps: int = knob(20, "train-loss points in the dvclive curves", lo=1)
    seed: int = knob(42, "seed of initialisation, shuffling and the row subset", lo=0)
    lora: LoraSettings = knob(LoraSettings(), "LoRA adapters instead of full fine-tuning (r = 0: off)")
    demo: CamembertProfile = knob(
        CamembertProfile(
            model=SCRATCH,
            local_dir="",
            scratch=ScratchArchitecture(),
            max_length=64,
            max_train_rows=8000,
            epochs=4,
            batch_size=32,
            group_by_length=True,
            learning_rate=0.002,
            weight_decay=0.01,
            warmup_ratio=0.1,
        ),
        "small CamemBERT config from scratch: offline, 2 CPU cores, minutes",
    )
    full: CamembertProfile = knob(
        CamembertProfile(
            model="camembert-base",
            local_dir="models/pretrained/camembert-base",
            scratch=None,
            max_length=256,
            max_train_rows=0,
            epochs=3,
            batch_size=16,
            group_by_length=True,
            learning_rate=0.00005,
            weight_decay=0.01,
            warmup_ratio=0.0,
        ),
        "the study: camembert-base, 3 epochs, batch 16, weight decay 0.01, learning rate 5e-5 (Trainer default); "
        "length-grouped batches (same data, less padding)",
    )
    strongest: CamembertProfile = knob(
        CamembertProfile(
            model="camembert/camembert-large",
            local_dir="models/pretrained/camembert--camembert-large",
            scratch=None,
            max_length=256,
            max_train_rows=0,
            epochs=3,
            batch_size=32,
            group_by_length=True,
            learning_rate=0.00002,
            weight_decay=0.01,
            warmup_ratio=0.06,
        ),
        "camembert-large (335M): the study's best single model (camembert-base) at 3x the capacity; lr 2e-5 "
        "with warm-up, the usual recipe for large encoders (GPU)",
    )


@dataclass
class CamembertModel:
    """A trained classifier: the HF model, its tokenizer, the config and the per-epoch val history."""

    model: Any
    tokenizer: Any
    config: CamembertConfig
    history: list[dict] = field(default_factory=list)
    rows: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- model building


def train_tokenizer(texts: list[str], vocab_size: int):
    """A SentencePiece-style (Metaspace) BPE fast tokenizer trained on ``texts``, CamemBERT's special tokens.

    Why: the demo profile must run offline, so it cannot download camembert-base's tokenizer; a
    vocabulary learnt from the training texts keeps the subword scheme and the special tokens.
    BPE rather than Unigram: the ``tokenizers`` Unigram trainer returns a different vocabulary on
    every run, which would break "same seed -> same metrics"; its BPE trainer is deterministic.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=512,
    )


def _label_maps() -> tuple[dict[int, str], dict[str, int]]:
    id2label = {i: str(code) for i, code in enumerate(CLASS_CODES)}
    return id2label, {v: k for k, v in id2label.items()}


def resolve_weights(cfg: CamembertConfig) -> str | None:
    """Directory of the pretrained model (None for ``scratch``); one-line PipelineError when unreachable."""
    if cfg.model == SCRATCH:
        return None
    from rakuten.runtime.pretrained import resolve_hf

    return resolve_hf(cfg.model, cfg.local_dir or None)


def scratch_config(arch: ScratchArchitecture, tokenizer, max_length: int):
    """A Hugging Face config of family ``arch.model_type`` at the given size, for random init.

    Why ``AutoConfig.for_model``: the same code builds a tiny CamemBERT, XLM-R, FlauBERT, DeBERTa-v2
    (CamemBERTa-v2) or BERT, so a demo run exercises the architecture the pretrained profile uses.
    """
    from transformers import AutoConfig

    id2label, label2id = _label_maps()
    specials = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    extra: dict[str, Any] = {"type_vocab_size": 1}
    if arch.model_type == "flaubert":  # XLM-style configs name their special ids *_index and derive masks from pad
        extra = {
            "pad_index": tokenizer.pad_token_id,
            "bos_index": tokenizer.bos_token_id,
            "eos_index": tokenizer.eos_token_id,
            "unk_index": tokenizer.unk_token_id,
            "mask_index": tokenizer.mask_token_id,
            "n_langs": 1,
        }
    elif arch.model_type == "deberta-v2":
        extra = {
            "type_vocab_size": 0,
            "relative_attention": True,
            "position_buckets": 64,
            "pos_att_type": ["p2c", "c2p"],
        }
    return AutoConfig.for_model(
        arch.model_type,
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=max_length + 2,
        num_labels=N_CLASSES,
        id2label=id2label,
        label2id=label2id,
        **specials,
        **extra,
    )


def build_model(cfg: CamembertConfig, train_texts: list[str]):
    """(tokenizer, model) for the config: pretrained weights resolved offline-first, or scratch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    id2label, label2id = _label_maps()
    if cfg.model == SCRATCH:
        tokenizer = train_tokenizer(train_texts, cfg.scratch.vocab_size)
        hf_config = scratch_config(cfg.scratch, tokenizer, cfg.max_length)
        return tokenizer, AutoModelForSequenceClassification.from_config(hf_config)
    path = resolve_weights(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=N_CLASSES, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
    )
    return tokenizer, model


# attention query/value projections of the families peft has no default for (others: peft's own table)
LORA_TARGETS = {"camembert": ["query", "value"], "flaubert": ["q_lin", "v_lin"], "xlm": ["q_lin", "v_lin"]}


def add_lora(model, lora: LoraSettings):
    """``model`` wrapped with LoRA adapters (``peft``); the classification head stays fully trainable.

    A model family without a known default target (and ``lora.target_modules`` empty) is a one-line
    error naming the key, rather than peft's multi-line exception.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(lora.target_modules) or LORA_TARGETS.get(model.config.model_type)
    try:
        peft_cfg = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
        )
        wrapped = get_peft_model(model, peft_cfg)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise PipelineError(
            f"camembert.lora.target_modules = {list(lora.target_modules)}: {first}; expected "
            f"module names of the {model.config.model_type} model (e.g. query, value)"
        ) from None
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info(
        "camembert: LoRA r=%d trains %d of %d parameters (%.2f%%)",
        lora.r,
        trainable,
        total,
        100.0 * trainable / max(total, 1),
    )
    return wrapped


def merge_lora(model):
    """The plain Hugging Face model with the adapters folded into its weights (saved and loaded as usual)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


# ----------------------------------------------------------------------------------------- data


class EncodedTexts(torch.utils.data.Dataset):
    """Pre-tokenised texts (+ label indices) for the Trainer; padding happens per batch."""

    def __init__(self, encodings: Mapping[str, list], labels: np.ndarray | None = None):
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict:
        item = {key: values[i] for key, values in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


def frame_texts(frame: pd.DataFrame, column: str) -> list[str]:
    """The model's input texts; a missing column is a one-line error naming the stage that makes it."""
    if column not in frame.columns:
        raise PipelineError(
            f"model frame: missing column {column}; expected the text_clean columns (data/processed/text.parquet)"
        )
    return frame[column].fillna("").astype(str).tolist()


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, list]:
    return dict(tokenizer(texts, truncation=True, max_length=max_length))


# ------------------------------------------------------------------------------------- training


def _weighted_loss(weights: torch.Tensor):
    def loss(outputs, labels, num_items_in_batch=None):  # noqa: ARG001 - Trainer's signature
        logits = outputs["logits"]
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weights.to(logits.device))

    return loss


def _compute_metrics(eval_pred) -> dict[str, float]:
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


def _live_callback(live_dir: str | None):
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
def _checkpoint_dir(here: World) -> Iterator[str]:
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


def train(
    train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: CamembertConfig, live_dir: str | Path | None = None
) -> CamembertModel:
    """Fine-tune on ``train_frame``; evaluate weighted F1 on ``val_frame`` each epoch; keep the best epoch.

    ``live_dir``: where dvclive writes the learning curves (None = no curves; rank 0 only when
    started by torchrun: the Trainer then runs DDP over the ranks with the global batch split evenly).
    """
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    runtime = choose_runtime(cfg.device, cfg.precision)
    here = distributed.init(runtime.device)
    threads = set_threads(cfg.num_threads)
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
    train_frame = train_frame.iloc[keep]
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
    loss_func = None
    if cfg.class_weighting == "balanced":
        loss_func = _weighted_loss(torch.tensor(class_weights(labels), dtype=torch.float32))

    with _checkpoint_dir(here) as ckpt_dir:
        args = TrainingArguments(**training_arguments(cfg, runtime, len(train_ds), ckpt_dir, here.size))
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=_compute_metrics,
            compute_loss_func=loss_func,
            callbacks=_live_callback(live_dir if here.is_main else None),
        )
        if here.distributed:  # accelerate may set its own thread count for CPU ranks: keep the param's
            set_threads(cfg.num_threads)
        trainer.train()
        model = merge_lora(trainer.model)
    history = [
        {
            "epoch": round(float(e["epoch"]), 3),
            **{m: e[f"eval_{m}"] for m in ("weighted_f1", "macro_f1", "accuracy", "loss")},
        }
        for e in trainer.state.log_history
        if "eval_weighted_f1" in e
    ]
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


# ------------------------------------------------------------------------------------ inference


def _forward_batches(model: CamembertModel, texts: list[str], **forward: Any):
    """Yield ``(row indices, model output)`` over ``texts`` in length-sorted batches (little padding)."""
    cfg = model.config
    enc = encode(model.tokenizer, texts, cfg.max_length)
    order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    device = next(model.model.parameters()).device
    runtime = Runtime(device.type, "fp32") if device.type == "cpu" else choose_runtime("cuda", cfg.precision)
    model.model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), cfg.eval_batch_size):
            idx = order[start : start + cfg.eval_batch_size]
            batch = model.tokenizer.pad({k: [v[i] for i in idx] for k, v in enc.items()}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None):
                yield idx, batch, model.model(**batch, **forward)


def predict_proba(model: CamembertModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) class probabilities in canonical order; batches sorted by length to limit padding."""
    texts = frame_texts(frame, model.config.text_column)
    if not texts:
        return np.zeros((0, N_CLASSES))
    logits = np.empty((len(texts), N_CLASSES), dtype=np.float64)
    for idx, _, out in _forward_batches(model, texts):
        logits[idx] = out.logits.float().cpu().numpy()
    return softmax_proba(logits)


def embedding_dim(model: CamembertModel) -> int:
    """Width of :func:`embed_texts` rows: the encoder's hidden size."""
    return int(model.model.config.hidden_size)


def embed_texts(model: CamembertModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, hidden) float32 sentence embeddings: the last hidden layer mean-pooled over real tokens.

    Why mean pooling of the last layer: it exists for every encoder family (CamemBERT, XLM-R,
    FlauBERT, DeBERTa-v2, BERT), unlike a pooler, and it is the frozen feature the joint model reads.
    """
    texts = frame_texts(frame, model.config.text_column)
    out = np.zeros((len(texts), embedding_dim(model)), dtype=np.float32)
    for idx, batch, result in _forward_batches(model, texts, output_hidden_states=True):
        hidden = result.hidden_states[-1].float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out[idx] = ((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)).cpu().numpy()
    return out


# --------------------------------------------------------------------------------- persistence


def save(model: CamembertModel, directory: str | Path) -> None:
    """``hf/`` (model + tokenizer, ``save_pretrained``), ``camembert.json`` (config + val history); atomic."""
    with atomic_path(directory, is_dir=True) as tmp:
        model.model.save_pretrained(tmp / "hf")
        model.tokenizer.save_pretrained(tmp / "hf")
        write_meta(tmp / "camembert.json", model.config, model.history, model.rows)
        distributed.drop_launch_knobs(tmp / "camembert.json")  # how it was launched is not part of the model


def load(directory: str | Path) -> CamembertModel:
    """Load a model saved by :func:`save` onto CUDA when present, else CPU."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(directory)
    meta = read_meta(directory / "camembert.json", directory / "hf", "CamemBERT", NAME)
    cfg = parse_section(
        CamembertConfig, distributed.with_launch_knobs(meta["config"]), NAME, source=str(directory / "camembert.json")
    )
    set_threads(cfg.num_threads)  # predictions with the numerics the model was trained with, on any machine
    runtime = choose_runtime(cfg.device if cfg.device != "cuda" else "auto", "auto")
    tokenizer = AutoTokenizer.from_pretrained(directory / "hf")
    # safetensors only: a pickled pytorch_model.bin dropped beside it is never read (it could run code)
    hf_model = (
        AutoModelForSequenceClassification.from_pretrained(directory / "hf", use_safetensors=True)
        .to(runtime.device)
        .eval()
    )
    return CamembertModel(
        model=hf_model, tokenizer=tokenizer, config=cfg, history=meta.get("history", []), rows=meta.get("rows", {})
    )

"""CamemBERT sequence classification fine-tuned with the Hugging Face ``Trainer``.

Two profiles (``camembert.profile`` in params.yaml), same code path:

* ``full``: ``camembert-base`` resolved by :mod:`rakuten.pretrained` (local dir -> HF cache -> hub,
  one-line error offline, never a silent random init), the study's 3 epochs, batch 16, weight decay 0.01;
* ``demo`` (default): ``model: scratch``, a small CamemBERT-architecture config trained from random
  init with a SentencePiece-style BPE tokenizer trained on the training texts with the
  ``tokenizers`` library; runs offline on 2 CPU cores in minutes.

Validation weighted F1 is computed every epoch and the best epoch's weights are kept
(``load_best_model_at_end``); learning curves go to dvclive through its Hugging Face callback.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from rakuten import params as P
from rakuten.classes import CLASS_CODES, N_CLASSES, codes_to_indices, indices_to_codes
from rakuten.errors import PipelineError
from rakuten.evaluate import scores
from rakuten.io import atomic_path
from rakuten.models.torch_utils import (DEVICES, PRECISIONS, Runtime, choose_runtime, class_weights,
                                        read_meta, seed_everything, set_threads, softmax_proba, stratified_cap,
                                        write_meta)

log = logging.getLogger(__name__)

NAME = "camembert"
PROFILES = ("demo", "full")
SCRATCH = "scratch"
TEXT_COLUMNS = ("text_light", "text_norm")
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # CamemBERT's order: ids 0..4


@dataclass(frozen=True)
class ScratchArchitecture:
    """The small CamemBERT config of the demo profile (random init, own tokenizer)."""

    vocab_size: int = 8000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512


@dataclass(frozen=True)
class CamembertConfig:
    """Everything ``train`` needs; built from params.yaml by :func:`parse_config`."""

    profile: str = "demo"
    model: str = SCRATCH                 # "scratch" or a Hugging Face id / local directory
    local_dir: str = ""                  # where pretrained weights are looked for first ("" = models/pretrained/<id>)
    scratch: ScratchArchitecture = field(default_factory=ScratchArchitecture)
    max_length: int = 64
    max_train_rows: int = 0              # 0 = all train rows; else a stratified subset
    epochs: int = 2
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    class_weighting: str = "none"        # none | balanced (loss weights n / (k * n_c))
    text_column: str = "text_light"
    logging_steps: int = 20
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    num_threads: int = 0                 # torch CPU threads, 0 = all cores
    live_dir: str | None = None          # dvclive output directory (None = no curves)


@dataclass
class CamembertModel:
    """A trained classifier: the HF model, its tokenizer, the config and the per-epoch val history."""

    model: Any
    tokenizer: Any
    config: CamembertConfig
    history: list[dict] = field(default_factory=list)
    rows: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ params

def parse_config(section: Mapping[str, Any]) -> CamembertConfig:
    """Validate the ``camembert`` section (shared keys + the selected profile's keys) before any work."""
    root, k = {NAME: section}, f"{NAME}."
    profile = P.choice(root, k + "profile", PROFILES)
    p = f"{k}{profile}."
    model = P.get(root, p + "model")
    if not isinstance(model, str) or not model:
        raise PipelineError(f"params.yaml: {p}model = {model!r}, expected 'scratch' or a Hugging Face model id/path")
    local_dir = P.get(root, p + "local_dir") or ""
    if not isinstance(local_dir, str):
        raise PipelineError(f"params.yaml: {p}local_dir = {local_dir!r}, expected a directory path or empty")
    scratch = ScratchArchitecture()
    if model == SCRATCH:
        s = p + "scratch."
        scratch = ScratchArchitecture(
            vocab_size=P.integer(root, s + "vocab_size", 100, 250_000),
            hidden_size=P.integer(root, s + "hidden_size", 8, 4096),
            num_layers=P.integer(root, s + "num_layers", 1, 48),
            num_heads=P.integer(root, s + "num_heads", 1, 64),
            intermediate_size=P.integer(root, s + "intermediate_size", 8, 16384),
        )
        if scratch.hidden_size % scratch.num_heads:
            raise PipelineError(f"params.yaml: {s}hidden_size = {scratch.hidden_size} is not a multiple of "
                                f"{s}num_heads = {scratch.num_heads}")
    return CamembertConfig(
        profile=profile, model=model, local_dir=local_dir, scratch=scratch,
        max_length=P.integer(root, p + "max_length", 8, 512),
        max_train_rows=P.integer(root, p + "max_train_rows", 0),
        epochs=P.integer(root, p + "epochs", 1, 100),
        batch_size=P.integer(root, p + "batch_size", 1, 4096),
        eval_batch_size=P.integer(root, k + "eval_batch_size", 1, 4096),
        learning_rate=float(P.number(root, p + "learning_rate", 0.0, 1.0, lo_open=True)),
        weight_decay=float(P.number(root, p + "weight_decay", 0.0, 1.0)),
        warmup_ratio=float(P.number(root, p + "warmup_ratio", 0.0, 0.99)),
        class_weighting=P.choice(root, k + "class_weighting", ("none", "balanced")),
        text_column=P.choice(root, k + "text_column", TEXT_COLUMNS),
        logging_steps=P.integer(root, k + "logging_steps", 1),
        seed=P.integer(root, k + "seed", 0),
        device=P.choice(root, k + "device", DEVICES),
        precision=P.choice(root, k + "precision", PRECISIONS),
        num_threads=P.integer(root, k + "num_threads", 0, 256),
    )


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
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                   model_max_length=512)


def _label_maps() -> tuple[dict[int, str], dict[str, int]]:
    id2label = {i: str(code) for i, code in enumerate(CLASS_CODES)}
    return id2label, {v: k for k, v in id2label.items()}


def resolve_weights(cfg: CamembertConfig) -> str | None:
    """Directory of the pretrained model (None for ``scratch``); one-line PipelineError when unreachable."""
    if cfg.model == SCRATCH:
        return None
    from rakuten.pretrained import resolve_hf

    return resolve_hf(cfg.model, cfg.local_dir or None)


def build_model(cfg: CamembertConfig, train_texts: list[str]):
    """(tokenizer, model) for the config: pretrained weights resolved offline-first, or scratch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers import CamembertConfig as HFCamembertConfig

    id2label, label2id = _label_maps()
    if cfg.model == SCRATCH:
        tokenizer = train_tokenizer(train_texts, cfg.scratch.vocab_size)
        a = cfg.scratch
        hf_config = HFCamembertConfig(
            vocab_size=len(tokenizer), hidden_size=a.hidden_size, num_hidden_layers=a.num_layers,
            num_attention_heads=a.num_heads, intermediate_size=a.intermediate_size,
            max_position_embeddings=cfg.max_length + 2, type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, num_labels=N_CLASSES, id2label=id2label, label2id=label2id)
        return tokenizer, AutoModelForSequenceClassification.from_config(hf_config)
    path = resolve_weights(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=N_CLASSES, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True)
    return tokenizer, model


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
        raise PipelineError(f"model frame: missing column {column}; expected the text_clean columns "
                            "(data/processed/text.parquet)")
    return frame[column].fillna("").astype(str).tolist()


def frame_labels(frame: pd.DataFrame) -> np.ndarray:
    """Class indices of a labelled frame; an unlabelled or unknown code names its row."""
    codes = frame["prdtypecode"]
    if codes.isna().any():
        row = frame.loc[codes.isna(), "row_id"].iloc[0]
        raise PipelineError(f"model frame: row_id {row} has no prdtypecode; expected labelled train/val rows")
    try:
        return codes_to_indices(codes.to_numpy(dtype=np.int64))
    except ValueError as exc:
        raise PipelineError(f"model frame, column prdtypecode: {exc}") from None


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


def _live_callback(live_dir: str | None):
    if not live_dir:
        return []
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class TimingFreeDVCLiveCallback(DVCLiveCallback):
        """Curves without wall-clock figures (runtime, samples/s): a rerun writes identical files."""

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            logs = {k: v for k, v in (logs or {}).items() if not k.endswith(_TIMING_SUFFIXES)}
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    # inside a DVC stage: no experiment commits and no edits to dvc.yaml from dvclive itself
    return [TimingFreeDVCLiveCallback(live=Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False))]


def train(train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: CamembertConfig) -> CamembertModel:
    """Fine-tune on ``train_frame``; evaluate weighted F1 on ``val_frame`` each epoch; keep the best epoch."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    runtime = choose_runtime(cfg.device, cfg.precision)
    threads = set_threads(cfg.num_threads)
    keep = stratified_cap(train_frame["prdtypecode"].to_numpy(dtype=np.int64), cfg.max_train_rows, cfg.seed)
    if len(keep) < len(train_frame):
        log.info("camembert: max_train_rows = %d keeps %d of %d train rows (stratified)",
                 cfg.max_train_rows, len(keep), len(train_frame))
    rows = {"train_rows": int(len(train_frame)), "dropped_max_train_rows": int(len(train_frame) - len(keep)),
            "train_rows_used": int(len(keep)), "val_rows": int(len(val_frame))}
    train_frame = train_frame.iloc[keep]
    texts, labels = frame_texts(train_frame, cfg.text_column), frame_labels(train_frame)
    val_texts, val_labels = frame_texts(val_frame, cfg.text_column), frame_labels(val_frame)
    log.info("camembert (%s profile, %s): %d train / %d val rows on %s %s, %d CPU threads", cfg.profile,
             cfg.model, len(texts), len(val_texts), runtime.device, runtime.precision, threads)

    seed_everything(cfg.seed)
    tokenizer, model = build_model(cfg, texts)
    train_ds = EncodedTexts(encode(tokenizer, texts, cfg.max_length), labels)
    val_ds = EncodedTexts(encode(tokenizer, val_texts, cfg.max_length), val_labels)
    loss_func = None
    if cfg.class_weighting == "balanced":
        loss_func = _weighted_loss(torch.tensor(class_weights(labels), dtype=torch.float32))

    with tempfile.TemporaryDirectory(prefix="camembert-ckpt-") as ckpt_dir:
        args = TrainingArguments(
            output_dir=ckpt_dir, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio, eval_strategy="epoch",
            save_strategy="epoch", save_total_limit=1, save_only_model=True, load_best_model_at_end=True,
            metric_for_best_model="weighted_f1", greater_is_better=True, logging_strategy="steps",
            logging_steps=cfg.logging_steps, seed=cfg.seed, data_seed=cfg.seed,
            use_cpu=runtime.device == "cpu", bf16=runtime.precision == "bf16", fp16=runtime.precision == "fp16",
            report_to="none", dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          compute_metrics=_compute_metrics, compute_loss_func=loss_func,
                          callbacks=_live_callback(cfg.live_dir))
        trainer.train()
        model = trainer.model
    history = [{"epoch": round(float(e["epoch"]), 3), **{m: e[f"eval_{m}"] for m in
                                                        ("weighted_f1", "macro_f1", "accuracy", "loss")}}
               for e in trainer.state.log_history if "eval_weighted_f1" in e]
    best = max(history, key=lambda h: h["weighted_f1"]) if history else {}
    log.info("camembert: best val weighted F1 %.4f at epoch %s", best.get("weighted_f1", float("nan")),
             best.get("epoch"))
    return CamembertModel(model=model.eval(), tokenizer=tokenizer, config=replace(cfg, live_dir=None),
                          history=history, rows=rows)


def training_report(model: CamembertModel) -> dict:
    """What the stage writes to ``reports/training/camembert.json``: profile, rows, per-epoch val scores."""
    cfg = model.config
    best = max(model.history, key=lambda h: h["weighted_f1"]) if model.history else {}
    return {"profile": cfg.profile, "model": cfg.model, "max_length": cfg.max_length, "epochs": cfg.epochs,
            "rows": dict(model.rows), "best_epoch": best.get("epoch"), "history": model.history}


# ------------------------------------------------------------------------------------ inference

def predict_proba(model: CamembertModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) class probabilities in canonical order; batches sorted by length to limit padding."""
    cfg = model.config
    texts = frame_texts(frame, cfg.text_column)
    if not texts:
        return np.zeros((0, N_CLASSES))
    enc = encode(model.tokenizer, texts, cfg.max_length)
    order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    device = next(model.model.parameters()).device
    runtime = Runtime(device.type, "fp32") if device.type == "cpu" else choose_runtime("cuda", cfg.precision)
    logits = np.empty((len(texts), N_CLASSES), dtype=np.float64)
    model.model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), cfg.eval_batch_size):
            idx = order[start:start + cfg.eval_batch_size]
            batch = model.tokenizer.pad({k: [v[i] for i in idx] for k, v in enc.items()}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None):
                out = model.model(**batch).logits
            logits[idx] = out.float().cpu().numpy()
    return softmax_proba(logits)


# --------------------------------------------------------------------------------- persistence

def save(model: CamembertModel, directory: str | Path) -> None:
    """``hf/`` (model + tokenizer, ``save_pretrained``), ``camembert.json`` (config + val history); atomic."""
    with atomic_path(directory, is_dir=True) as tmp:
        model.model.save_pretrained(tmp / "hf")
        model.tokenizer.save_pretrained(tmp / "hf")
        write_meta(tmp / "camembert.json", model.config, model.history, model.rows)


def load(directory: str | Path) -> CamembertModel:
    """Load a model saved by :func:`save` onto CUDA when present, else CPU."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(directory)
    meta = read_meta(directory / "camembert.json", directory / "hf", "CamemBERT", NAME)
    raw = dict(meta["config"])
    raw["scratch"] = ScratchArchitecture(**raw["scratch"])
    cfg = CamembertConfig(**raw)
    runtime = choose_runtime(cfg.device if cfg.device != "cuda" else "auto", "auto")
    tokenizer = AutoTokenizer.from_pretrained(directory / "hf")
    hf_model = AutoModelForSequenceClassification.from_pretrained(directory / "hf").to(runtime.device).eval()
    return CamembertModel(model=hf_model, tokenizer=tokenizer, config=cfg, history=meta.get("history", []),
                          rows=meta.get("rows", {}))

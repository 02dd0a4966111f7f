"""The encoder and its tokenizer: pretrained weights resolved offline-first, or a small config of one encoder
family trained from scratch with a BPE tokenizer learnt on the training texts; LoRA adapters for large ones.

Why ``AutoConfig.for_model`` for scratch: the same code builds a tiny CamemBERT, XLM-R, FlauBERT, DeBERTa-v2
(CamemBERTa-v2) or BERT, so a demo run exercises the architecture the pretrained profile uses.
"""

from __future__ import annotations

import logging
from typing import Any

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES
from rakuten.core.errors import PipelineError
from rakuten.models.camembert.config import SCRATCH, CamembertConfig, LoraSettings, ScratchArchitecture

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # CamemBERT's order: ids 0..4


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

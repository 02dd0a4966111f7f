"""The trained text model at work: class probabilities and mean-pooled sentence embeddings.

Texts are tokenised, sorted by length and batched (``eval_batch_size``) so each batch carries little
padding; rows come back in their input order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from rakuten.contracts.classes import N_CLASSES
from rakuten.models.camembert.config import CamembertModel
from rakuten.models.camembert.data import encode, frame_texts
from rakuten.runtime.torch_setup import Runtime, choose_runtime, softmax_proba


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
            with runtime.autocast():
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

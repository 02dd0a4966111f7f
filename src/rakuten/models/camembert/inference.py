"""The trained text model at work: class probabilities and mean-pooled sentence embeddings, from one pass.

On CPU each text runs alone, unpadded: a padded batch rounds a row's outputs differently with the
lengths and the number of the texts beside it (measured: up to 2.5e-7 in the probabilities), so a product
would score differently alone, in a stream's chunk, in the service's batch or on another worker. Alone, a
row's outputs are a function of that row only; on the demo model that cost 30 % of the batched speed. On
CUDA texts are sorted by length and batched (``eval_batch_size``) so each batch carries little padding.
Rows come back in their input order.
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
    """Yield ``(row indices, batch, model output)`` over ``texts``: one text per pass on CPU (see the
    module's docstring), length-sorted batches of ``eval_batch_size`` on CUDA."""
    cfg = model.config
    enc = encode(model.tokenizer, texts, cfg.max_length)
    order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    device = next(model.model.parameters()).device
    runtime = Runtime(device.type, "fp32") if device.type == "cpu" else choose_runtime("cuda", cfg.precision)
    size = 1 if device.type == "cpu" else cfg.eval_batch_size
    model.model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            batch = model.tokenizer.pad({k: [v[i] for i in idx] for k, v in enc.items()}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            with runtime.autocast():
                yield idx, batch, model.model(**batch, **forward)


def predict_proba(model: CamembertModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) class probabilities in canonical order (see :func:`predict_and_embed`)."""
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


def _mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
    """The last hidden layer averaged over real tokens (padding left out)."""
    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return ((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)).cpu().numpy()


def predict_and_embed(model: CamembertModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n, 27) class probabilities and float32 (n, hidden) sentence embeddings from ONE pass per text:
    ``rakuten predict`` needs both when the joint model is fused, and the encoder dominates the cost."""
    texts = frame_texts(frame, model.config.text_column)
    logits = np.zeros((len(texts), N_CLASSES), dtype=np.float64)
    out = np.zeros((len(texts), embedding_dim(model)), dtype=np.float32)
    for idx, batch, result in _forward_batches(model, texts, output_hidden_states=True):
        logits[idx] = result.logits.float().cpu().numpy()
        out[idx] = _mean_pooled(result.hidden_states[-1], batch["attention_mask"])
    return (softmax_proba(logits) if len(texts) else np.zeros((0, N_CLASSES))), out


def embed_texts(model: CamembertModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, hidden) float32 sentence embeddings: the last hidden layer mean-pooled over real tokens (the pass
    of :func:`predict_and_embed`, which computes the head's logits on the way at no extra cost).

    Why mean pooling of the last layer: it exists for every encoder family (CamemBERT, XLM-R,
    FlauBERT, DeBERTa-v2, BERT), unlike a pooler, and it is the frozen feature the joint model reads.
    """
    return predict_and_embed(model, frame)[1]

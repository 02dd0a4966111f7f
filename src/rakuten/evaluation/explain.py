"""Why a product was put in a class, per model: the evidence each trained model used.

* TF-IDF models (:mod:`rakuten.models.tfidf_svm`): the terms of the text weighted by the class's
  linear coefficient x their TF-IDF value, i.e. each term's share of the class's decision score
  (random forest: impurity importance x TF-IDF value, it has no per-class weights).
* Transformer text models (:mod:`rakuten.models.camembert`): integrated gradients (captum) on the
  input embeddings against a pad-token baseline, sub-word pieces summed back into words.
* Image models (:mod:`rakuten.models.resnet50`): a Grad-CAM heat map (:mod:`rakuten.evaluation.gradcam`)
  on the last convolutional feature map, through exactly the eval transform the model predicts with.

Left out on purpose:

* fastText: its score is a linear layer on the *average* of word and hashed character-n-gram
  vectors; the library exposes no per-input gradient and the n-gram buckets have no readable term,
  so a faithful word attribution would mean re-implementing its hashing. Its TF-IDF peer already
  answers "which words" for the text side.
* joint: a head on frozen embeddings of the text and image encoders; the evidence it sees is what
  those encoders extracted, which their own explanations already show.

Every function is deterministic (same inputs -> same output) and leaves the model as it found it
(hooks removed; train/eval mode, ``requires_grad`` and ``.grad`` of every parameter restored),
because a service reuses the loaded models for predictions afterwards.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from rakuten.contracts.classes import CLASS_CODES
from rakuten.core.errors import PipelineError
from rakuten.evaluation.gradcam import check_class, data_uri, grad_enabled_on, gradcam, overlay

if TYPE_CHECKING:
    from rakuten.models.camembert.config import CamembertModel
    from rakuten.models.tfidf_svm import TfidfModel

log = logging.getLogger(__name__)

TFIDF_MODULE = "rakuten.models.tfidf_svm"
TRANSFORMER_MODULE = "rakuten.models.camembert.model"
IMAGE_MODULE = "rakuten.models.resnet50.model"
#: smallest side of the overlay explain_frame_row embeds: the demo model's 32 px map is unreadable as is
REPORT_OVERLAY_PX = 128


# ------------------------------------------------------------------------------------ TF-IDF terms


def tfidf_terms(model: TfidfModel, text: str, class_index: int, k: int = 10) -> list[dict]:
    """The ``k`` terms of ``text`` with the largest |class coefficient x TF-IDF value|, sorted by weight
    descending: ``[{"term", "weight"}]``. For a linear classifier the weights of all terms plus the
    intercept are the class's decision score, so each weight is that term's share of it.

    Random forest (no per-class weights): impurity importance x TF-IDF value. A class the model never saw
    in training, or an empty text, has no terms.
    """
    from rakuten.models.tfidf_svm import _class_term_weights

    class_index = check_class(class_index)
    if not isinstance(text, str) or not text.strip():
        return []
    x = model.pipeline.named_steps["tfidf"].transform([text]).tocsr()
    classes, weights = _class_term_weights(model)
    if weights is None:
        coef = np.asarray(model.pipeline.named_steps["clf"].feature_importances_, dtype=np.float64)
    else:
        rows = np.flatnonzero(np.asarray(classes) == CLASS_CODES[class_index])
        if not len(rows):
            return []
        # binary linear models keep one row of coefficients: for the first class, it is the negated row
        coef = np.asarray(weights[0] if len(weights) == 1 else weights[rows[0]], dtype=np.float64)
        if len(weights) == 1 and rows[0] == 0:
            coef = -coef
    terms = np.sort(x.indices)  # vocabulary order: alphabetical, so ties break the same way everywhere
    values = coef[terms] * x[0, terms].toarray().ravel()
    top = np.argsort(-np.abs(values), kind="stable")[:k]
    top = top[np.argsort(-values[top], kind="stable")]
    vocab = model.pipeline.named_steps["tfidf"].get_feature_names_out()
    return [{"term": str(vocab[terms[i]]), "weight": round(float(values[i]), 6)} for i in top]


# -------------------------------------------------------------------------- transformer attributions


@dataclass(frozen=True)
class TokenAttribution:
    """Integrated gradients of one text: per sub-word token (special tokens included, as encoded) its
    attribution, the word it belongs to (None for special tokens), the pad baseline and captum's
    convergence delta (sum of attributions minus the logit difference input - baseline)."""

    input_ids: list[int]
    baseline_ids: list[int]
    position_ids: list[int] | None
    word_ids: list[int | None]
    words: dict[int, str]
    attributions: np.ndarray
    delta: float


def _position_ids(hf_model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The position ids the model derives for the real input, caught from its position embedding table.

    Why: RoBERTa-style models (CamemBERT, XLM-R) number positions from the non-pad tokens, so an all-pad
    baseline would also move every position; passing the input's positions explicitly keeps the baseline
    a change of the word embeddings only, and captum's convergence delta meaningful.
    """
    if "position_ids" not in inspect.signature(hf_model.forward).parameters:
        return None
    tables = [
        m
        for name, m in hf_model.named_modules()
        if name.endswith("position_embeddings") and isinstance(m, torch.nn.Embedding)
    ]
    if not tables:
        return None
    seen: list[torch.Tensor] = []
    handle = tables[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    try:
        with torch.inference_mode():
            hf_model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
    return seen[0].reshape(1, -1) if seen and seen[0].numel() == input_ids.shape[1] else None


def _words(text: str, enc: Any) -> dict[int, str]:
    """Word index -> the word as written in ``text`` (span of its pieces' character offsets, trimmed)."""
    spans: dict[int, list[int]] = {}
    for word, (start, end) in zip(enc.word_ids(), enc["offset_mapping"]):
        if word is not None and end > start:
            span = spans.setdefault(word, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
    return {word: text[start:end].strip() for word, (start, end) in spans.items()}


def token_attributions(model: CamembertModel, text: str, class_index: int, steps: int = 16) -> TokenAttribution:
    """Integrated gradients (captum ``LayerIntegratedGradients``) of class ``class_index``'s logit on the
    encoder's input embeddings, from a baseline of pad tokens with the CLS/SEP tokens kept, ``steps``
    Gauss-Legendre points; the text is encoded as the model predicts it (``max_length`` truncation)."""
    from captum.attr import LayerIntegratedGradients

    class_index = check_class(class_index)
    hf, tokenizer = model.model, model.tokenizer
    device = next(hf.parameters()).device
    enc = tokenizer(text, truncation=True, max_length=model.config.max_length, return_offsets_mapping=True)
    word_ids = enc.word_ids()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
    ids = torch.tensor([enc["input_ids"]], dtype=torch.long, device=device)
    baseline = torch.tensor(
        [[t if w is None else pad for t, w in zip(enc["input_ids"], word_ids)]], dtype=torch.long, device=device
    )
    mask = torch.ones_like(ids)
    was_training = hf.training
    hf.eval()  # dropout off: the same text always gets the same attributions
    try:
        positions = _position_ids(hf, ids, mask)

        def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None):
            extra = {} if position_ids is None else {"position_ids": position_ids.expand(len(input_ids), -1)}
            return hf(input_ids=input_ids, attention_mask=attention_mask, **extra).logits.float()

        with grad_enabled_on(hf):
            lig = LayerIntegratedGradients(logits, hf.get_input_embeddings())
            attr, delta = lig.attribute(
                ids,
                baselines=baseline,
                additional_forward_args=(mask, positions),
                target=class_index,
                n_steps=steps,
                return_convergence_delta=True,
            )
    finally:
        hf.train(was_training)
    return TokenAttribution(
        input_ids=list(enc["input_ids"]),
        baseline_ids=baseline[0].tolist(),
        position_ids=None if positions is None else positions[0].tolist(),
        word_ids=list(word_ids),
        words=_words(text, enc),
        attributions=attr.detach().float().sum(dim=-1)[0].cpu().numpy().astype(np.float64),
        delta=float(delta.detach().reshape(-1)[0]),
    )


def _top(weights: dict[str, float], k: int, key: str) -> list[dict]:
    """The ``k`` largest |weight| (ties: first seen first), sorted by weight descending, rounded to 6 digits."""
    items = list(weights.items())
    top = sorted(sorted(items, key=lambda kv: -abs(kv[1]))[:k], key=lambda kv: -kv[1])
    return [{key: name, "weight": round(float(w), 6)} for name, w in top]


def transformer_tokens(model: CamembertModel, text: str, class_index: int, k: int = 10, steps: int = 16) -> list[dict]:
    """The ``k`` words of ``text`` with the largest |integrated gradient| for class ``class_index``:
    ``[{"token", "weight"}]`` sorted by weight descending. Sub-word pieces are summed into the
    whitespace-delimited word they belong to, and repeated words into one entry (their total effect);
    special tokens are dropped. Empty text -> []."""
    class_index = check_class(class_index)
    if not isinstance(text, str) or not text.strip():
        return []
    result = token_attributions(model, text, class_index, steps)
    totals: dict[str, float] = {}
    for word, value in zip(result.word_ids, result.attributions):
        if word is not None and result.words.get(word):
            totals[result.words[word]] = totals.get(result.words[word], 0.0) + float(value)
    return _top(totals, k, "token")


# ------------------------------------------------------------------------------------- one product row


def _row_text(row: pd.Series, column: str) -> str:
    """The row's cleaned text in ``column``, "" when empty, missing, or flagged ``text_empty``."""
    flagged = row.get("text_empty", False)
    if (pd.notna(flagged) and bool(flagged)) or column not in row.index:
        return ""
    value = row[column]
    return value if isinstance(value, str) and value.strip() else ""


def _row_image(row: pd.Series) -> str | None:
    """The cleaned image path when the row has a readable one (``image_ok`` and ``readable`` when present)."""
    for flag in ("image_ok", "readable"):
        if flag in row.index and not (pd.notna(row[flag]) and bool(row[flag])):
            return None
    path = row.get("clean_path")
    return str(path) if isinstance(path, (str, Path)) and Path(path).is_file() else None


def _explain_one(kind: str, model: Any, row: pd.Series, class_index: int, k: int) -> dict | None:
    """One model's explanation of the row, or None when the row lacks that model's input."""
    if kind == "image":
        path = _row_image(row)
        if path is None:
            return None
        heat = gradcam(model, path, class_index)
        return {"kind": "gradcam", "image": data_uri(overlay(path, heat, max(heat.shape[0], REPORT_OVERLAY_PX)))}
    text = _row_text(row, model.config.text_column)
    if not text:
        return None
    if kind == "terms":
        return {"kind": "terms", "items": tfidf_terms(model, text, class_index, k)}
    return {"kind": "tokens", "items": transformer_tokens(model, text, class_index, k)}


_KINDS = {TFIDF_MODULE: "terms", TRANSFORMER_MODULE: "tokens", IMAGE_MODULE: "image"}


def explain_frame_row(
    models: dict[str, tuple[ModuleType, Any]], row: pd.Series, class_index: int, k: int = 10
) -> dict[str, dict]:
    """Every loaded model's explanation of one cleaned product row (a row of ``rakuten.serving.predict.model_frame``),
    in ``models``' order: ``{"kind": "terms" | "tokens", "items": [...]}`` for text models,
    ``{"kind": "gradcam", "image": "data:image/png;base64,..."}`` for the image model (the overlay at
    >= :data:`REPORT_OVERLAY_PX` px). Models are known by their module, each reads its own config's
    ``text_column``; fastText and joint have no explainer (module docstring), and a model whose input
    the row lacks (empty text, unreadable image) is left out. A PipelineError (e.g. a Grad-CAM-less
    transformer image backbone) becomes ``{"kind": "none", "reason": "<its line>"}``."""
    class_index = check_class(class_index)
    out: dict[str, dict] = {}
    for name, (module, model) in models.items():
        kind = _KINDS.get(getattr(module, "__name__", ""))
        if kind is None:
            continue
        try:
            explanation = _explain_one(kind, model, row, class_index, k)
        except PipelineError as exc:
            explanation = {"kind": "none", "reason": (str(exc).strip().splitlines() or [type(exc).__name__])[0]}
        if explanation is not None:
            out[name] = explanation
    return out

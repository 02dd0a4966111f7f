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

The interface the rest of the code uses is :mod:`rakuten.models.camembert.model`; this file re-exports nothing.
"""

"""A trained text model on disk: ``hf/`` (model and tokenizer, ``save_pretrained``) beside ``camembert.json``.

Loading reads safetensors only (a pickled ``pytorch_model.bin`` dropped beside it is never read) and never
reads launch knobs: a model trained under torchrun predicts in one process like any other.
"""

from __future__ import annotations

from pathlib import Path

from rakuten.core.config import parse_section
from rakuten.core.io import atomic_path
from rakuten.models.camembert.config import NAME, CamembertConfig, CamembertModel
from rakuten.runtime import distributed
from rakuten.runtime.torch_setup import choose_runtime, read_meta, set_threads, write_meta


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

"""The ``camembert`` params section: the knobs, the three profiles, the scratch architecture, LoRA; and the
trained-model record.

Why apart from the code that uses them: the stage, ``rakuten predict`` and the params schema tests read
the config without loading transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rakuten.core.config import ConfigError, ProfileView, knob
from rakuten.runtime.knobs import CompileKnob, EvalBatchKnob, LaunchKnobs, TorchKnobs

NAME = "camembert"
PROFILES = ("demo", "full", "strongest")
# encoder families a demo (scratch) config can take: Hugging Face ``model_type`` names
MODEL_TYPES = ("camembert", "xlm-roberta", "flaubert", "deberta-v2", "bert", "roberta")
SCRATCH = "scratch"
TEXT_COLUMNS = ("text_light", "text_norm")


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
class CamembertConfig(ProfileView, TorchKnobs, CompileKnob, EvalBatchKnob, LaunchKnobs):
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

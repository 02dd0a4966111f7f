"""What the torch models share: device and precision choice, seeding, CPU threads, labels, class weights.

Why one place: "same seed -> same metrics on CPU" and "CUDA when present, bf16/fp16 there, fp32 on
CPU" must hold identically for CamemBERT, ResNet and the joint head, and the rules are easy to get
subtly wrong. Their shared early-stopping loop is :mod:`rakuten.runtime.training`.
"""

from __future__ import annotations

import json
import logging
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from rakuten.contracts.classes import CLASS_CODES, N_CLASSES, codes_to_indices
from rakuten.core.errors import PipelineError
from rakuten.core.numerics import configure_torch
from rakuten.runtime.knobs import DEVICES, PRECISIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs: ``device`` ("cpu" / "cuda") and ``precision`` ("fp32" / "fp16" / "bf16")."""

    device: str
    precision: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    def autocast(self) -> torch.autocast:
        """Mixed precision for this runtime's forward passes: the half type on CUDA, a no-op in fp32."""
        return torch.autocast(self.device, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)


def choose_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Resolve ``auto``: CUDA when present else CPU; bf16 on GPUs that support it, else fp16; fp32 on CPU.

    Asking for ``cuda`` on a machine without it, or half precision on CPU, is a one-line error
    rather than a silent change of what the params say.
    """
    if device not in DEVICES:
        raise PipelineError(f"device = {device!r}, expected one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise PipelineError(f"precision = {precision!r}, expected one of {', '.join(PRECISIONS)}")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise PipelineError("device = 'cuda' but no CUDA GPU is visible; use device: auto or cpu")
    resolved = "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"
    if resolved == "cpu":
        if precision in ("fp16", "bf16"):
            raise PipelineError(f"precision = {precision!r} needs a CUDA GPU; use precision: auto or fp32 on CPU")
        return Runtime("cpu", "fp32")
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Runtime("cuda", precision)


def set_threads(num_threads: int) -> int:
    """Set torch's intra-op CPU threads (0 = all cores) and its deterministic numerics; return the threads.

    Why here: both models call it before building a network, so the policy of
    :func:`rakuten.core.numerics.configure_torch` (same bits on any machine of this kind) covers them both.
    """
    return configure_torch(num_threads)


@contextmanager
def threads(num_threads: int) -> Iterator[int]:
    """``num_threads`` torch CPU threads (0 = all cores) inside the block, the previous count after it.

    For inference passes whose bits do not depend on the count (images one by one through ATen's
    convolutions, heads row by row): a training stage kept on one thread scores on every core."""
    previous = torch.get_num_threads()
    try:
        yield set_threads(num_threads)
    finally:
        set_threads(previous)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a rerun on CPU gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def class_weights(labels: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """ "Balanced" weights ``n / (k * count_c)`` per class index (absent classes get weight 0).

    Same formula as scikit-learn's ``class_weight='balanced'`` but defined for every one of the
    27 classes, so the weight vector always matches the model's output layer.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


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


def softmax_proba(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, renormalised so every row sums to 1 within 1e-12."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def stratified_cap(labels: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_rows`` rows keeping class proportions (every class keeps >= 1 row).

    ``max_rows`` of 0 keeps everything. Used by the demo profiles to bound CPU time.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if max_rows <= 0 or max_rows >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_rows / n).astype(int))
    for cls, q in zip(classes, quota):
        idx = np.flatnonzero(labels == cls)
        keep.append(rng.choice(idx, size=min(q, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def write_meta(path: Path, config, history: list, rows: dict) -> None:
    """The readable side file of a saved torch model: config, val history, row accounting, class order."""
    meta = {"config": asdict(config), "history": history, "rows": rows, "class_codes": list(CLASS_CODES)}
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_meta(path: Path, weights: Path, what: str, stage: str) -> dict:
    """Read :func:`write_meta`'s file; a missing model or another class order is one line."""
    if not path.is_file() or not weights.exists():
        raise PipelineError(f"{path}: not found; expected a trained {what} (run `dvc repro {stage}`)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("class_codes") != list(CLASS_CODES):
        raise PipelineError(f"{path}: class_codes differ from the 27 canonical codes; retrain the model")
    return meta

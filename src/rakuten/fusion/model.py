"""The fused model: the chosen strategy, fitted on validation rows, plus its fallback for rows missing an input.

Why apart from the fitting: ``rakuten predict``, the HTTP service and the ``submission`` stage apply a
saved fused model; they need this class and the availability rule, never the cross-validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rakuten.core.errors import PipelineError
from rakuten.fusion.probs import check_inputs, normalise_rows, weighted_sum

#: the inputs a model of each modality reads (registry.MODALITIES); it is available when it has any of them
MODALITY_INPUTS = {"text": ("text",), "image": ("image",), "multimodal": ("text", "image")}


def modality_inputs(modality: str) -> tuple[str, ...]:
    """``text`` / ``image`` inputs of a modality; an unknown one is a one-line error."""
    try:
        return MODALITY_INPUTS[modality]
    except KeyError:
        raise PipelineError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITY_INPUTS)}") from None


def availability(modalities: Sequence[str], text_ok: np.ndarray, image_ok: np.ndarray) -> np.ndarray:
    """(n, m) bool: whether each model's input is present per row (text models need text, image models an
    image, a multimodal model either: it zeroes the missing one itself)."""
    ok = {"text": np.asarray(text_ok, dtype=bool), "image": np.asarray(image_ok, dtype=bool)}
    cols = [np.logical_or.reduce([ok[i] for i in modality_inputs(mod)]) for mod in modalities]
    return np.column_stack(cols) if cols else np.ones((len(ok["text"]), 0), dtype=bool)


@dataclass
class FusedModel:
    """The chosen strategy, fitted on validation rows, plus the fallback for rows missing an input, the
    calibrator of its output and the human-review threshold on the calibrated top probability.

    A row whose text is empty or whose image is missing is fused from the models that have their
    input: a soft vote with the validation-fitted weights renormalised over those models (equal
    weights if they all had weight 0). A row missing every input uses all models as they are.

    ``calibrator`` (:mod:`rakuten.fusion.calibration`) and ``review_threshold``
    (:mod:`rakuten.fusion.review`) are fitted on validation rows too. Their defaults are class attributes,
    so a model pickled before they existed loads as uncalibrated, with no row sent to review.
    """

    strategy: str
    models: list[str]
    modalities: list[str]
    combiner: object
    fallback_weights: np.ndarray
    calibrator: object | None = None  # None: the probabilities as fused (models saved before calibration)
    review_threshold: float | None = None  # None: no row needs review

    def predict_proba(self, probs: Sequence[np.ndarray], available: np.ndarray | None = None) -> np.ndarray:
        """The calibrated fused probabilities (n, 27): :meth:`raw_proba`, then the calibrator."""
        out = self.raw_proba(probs, available)
        return out if self.calibrator is None else self.calibrator.transform(normalise_rows(out))

    def raw_proba(self, probs: Sequence[np.ndarray], available: np.ndarray | None = None) -> np.ndarray:
        """The combiner's probabilities, with the missing-input fallback, before calibration."""
        mats = check_inputs(probs)
        if len(mats) != len(self.models):
            raise ValueError(
                f"fused model expects {len(self.models)} matrices ({', '.join(self.models)}), got {len(mats)}"
            )
        out = np.asarray(self.combiner.predict_proba(mats), dtype=np.float64)
        if available is None:
            return out
        available = np.asarray(available, dtype=bool)
        partial = ~available.all(axis=1) & available.any(axis=1)
        for pattern in np.unique(available[partial], axis=0):
            rows = partial & (available == pattern).all(axis=1)
            w = self.fallback_weights * pattern
            w = w / w.sum() if w.sum() > 0 else pattern / pattern.sum()
            out[rows] = weighted_sum(w, [m[rows] for m in mats])
        return out

    def needs_review(self, proba: np.ndarray) -> np.ndarray:
        """Per row of (calibrated) ``proba``: its top probability is below the review threshold (all False
        without a threshold)."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.review_threshold is None:
            return np.zeros(len(proba), dtype=bool)
        return proba.max(axis=1) < self.review_threshold

    def inputs_used(self, text_ok: np.ndarray, image_ok: np.ndarray) -> list[str]:
        """Per row, which modalities the prediction came from, and why one is missing."""
        has = {i for mod in self.modalities for i in modality_inputs(mod)}
        out = []
        for t, i in zip(np.asarray(text_ok, dtype=bool), np.asarray(image_ok, dtype=bool)):
            used = [m for m, ok in (("text", t), ("image", i)) if m in has and ok]
            missing = [
                why for m, ok, why in (("text", t, "text empty"), ("image", i, "image missing")) if m in has and not ok
            ]
            if not used:
                out.append("none (" + ", ".join(missing) + "): all models on blank input")
            elif missing:
                out.append(f"{'+'.join(used)} only ({', '.join(missing)})")
            else:
                out.append("+".join(used))
        return out

    def summary(self) -> dict:
        weights = getattr(self.combiner, "weights_", None)
        return {
            "strategy": self.strategy,
            "models": self.models,
            "modalities": self.modalities,
            "weights": None if weights is None else dict(zip(self.models, map(float, weights))),
            "fallback_weights": dict(zip(self.models, map(float, self.fallback_weights))),
            "calibration": (
                {"method": "none", "params": {}}
                if self.calibrator is None
                else {"method": self.calibrator.method, "params": self.calibrator.params()}
            ),
            "review_threshold": None if self.review_threshold is None else round(float(self.review_threshold), 6),
        }

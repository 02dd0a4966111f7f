"""Per-row language detection with py3langid (offline, bundled model, ~thousands of rows/s).

Why restrict the candidate languages: the full model knows 97 languages, and on short product
titles ("Lego bande dessinée") it wanders into rare ones; restricting it to the languages that
actually occur in the catalog (``text_clean.language.candidates``) raises accuracy on the planted languages
of the sample catalog (see docs/text.md for the measured figures). An empty list keeps all 97.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from rakuten.core.errors import PipelineError

UNKNOWN = "und"  # ISO 639-2 "undetermined": empty text, or confidence under the threshold


class LanguageDetector:
    """Language and a normalised confidence in [0, 1] for each text."""

    def __init__(self, languages: Sequence[str] = (), min_confidence: float = 0.0, key: str = "languages"):
        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if languages:
            unknown = sorted(set(languages) - set(self._identifier.labels))
            if unknown:
                raise PipelineError(
                    f"params.yaml: {key} contains {unknown[0]!r}, expected ISO 639-1 codes "
                    f"known to py3langid (e.g. fr, en, de)"
                )
            self._identifier.set_languages(list(languages))
        self.min_confidence = min_confidence

    def detect_one(self, text: str) -> tuple[str, float]:
        """``(language, confidence)``; ``("und", 0.0)`` for a text without letters."""
        if not any(ch.isalpha() for ch in text):
            return UNKNOWN, 0.0
        lang, conf = self._identifier.classify(text)
        if conf < self.min_confidence:
            return UNKNOWN, float(conf)
        return lang, float(conf)

    def detect(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Languages (object array) and confidences (float32 array) for ``texts``."""
        pairs = [self.detect_one(t) for t in texts]
        langs = np.array([p[0] for p in pairs], dtype=object)
        confs = np.array([p[1] for p in pairs], dtype=np.float32)
        return langs, confs


def distribution(langs: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{lang: {"rows": n, "share": n / total}}``, most frequent first (for the stage report)."""
    values, counts = np.unique(np.asarray(langs, dtype=str), return_counts=True)
    total = max(int(counts.sum()), 1)
    order = np.argsort(-counts, kind="stable")
    return {str(values[i]): {"rows": int(counts[i]), "share": round(float(counts[i]) / total, 6)} for i in order}

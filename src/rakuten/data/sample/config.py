"""Size, seed, label noise and planted rates of the synthetic catalog.

Why apart: whatever reads the ``sample`` params (the stage, the params schema, ``tools/params_yaml``)
loads the declaration alone, not OpenCV and the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rakuten.contracts.classes import CLASS_CODES
from rakuten.core.config import knob


@dataclass(frozen=True)
class Planted:
    """Rates of the properties the generator plants, mimicking the real catalog (fixed, not params)."""

    missing_description_rate: float = 0.35
    english_rate: float = 0.15
    german_rate: float = 0.03
    other_language_rate: float = 0.01
    hard_row_rate: float = 0.22
    duplicate_text_rate: float = 0.011
    conflicting_duplicate_share: float = 0.2
    mojibake_rate: float = 0.01
    exact_duplicate_rate: float = 0.02
    near_duplicate_rate: float = 0.03
    blur_rate: float = 0.04
    red_cast_rate: float = 0.04
    border_rate: float = 0.05
    jpeg_quality: int = 90


@dataclass(frozen=True)
class SampleConfig:
    """``sample``: size and seed of the synthetic catalog (generated only when ``data.source`` is sample)."""

    n_train: int = knob(5000, "labelled rows (the real catalog: 84916)", lo=2 * len(CLASS_CODES))
    n_test: int = knob(800, "official test rows (the real catalog: 13812)", lo=0)
    image_size: int = knob(128, "image side in px (the real catalog: 500)", lo=32, hi=1024)
    seed: int = knob(42, "generator seed: same seed, byte-identical catalog", lo=0)
    label_noise: float = knob(
        0.03,
        "share of labelled rows whose label is switched to a sibling class (defects.json label_noise, "
        "the label audit's ground truth); 0 = none",
        lo=0.0,
        hi=0.5,
    )
    n_jobs: int = knob(2, "worker processes (output does not depend on it)", lo=1, hi=256, runtime=True)

    #: what the generator plants: fixed by its design (mimicking the real catalog), not params
    planted: ClassVar[Planted] = Planted()

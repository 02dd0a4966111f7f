"""The ``image_clean`` params section, validated once into a frozen config.

Why a dataclass: the per-image worker runs in other processes, so it gets one small picklable
object instead of a nested dict, and every key is checked (with its dotted name in the error)
before any image is touched. The hashing knobs (hash size, radius, crop variants) live in the
``image_hash`` section (:mod:`rakuten.image.hashing`): duplicates are found before the split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from rakuten import params as P

SECTION = "image_clean"
RED_CAST_METHODS = ("gray_world", "saturation", "equalize", "none")
BORDER_BACKGROUNDS = ("white", "uniform")


@dataclass(frozen=True)
class ImageCleanConfig:
    """Every knob of the image cleaning (see ``params.yaml``, section ``image_clean``)."""

    size: int = 224
    jpeg_quality: int = 95
    n_jobs: int = 2
    min_side: int = 16
    cross_class_weight: float = 0.5
    blur_threshold: float = 40.0
    sharpen_amount: float = 1.0
    sharpen_sigma: float = 1.0
    red_threshold: float = 1.15
    red_method: str = "gray_world"
    saturation_reduction: float = 0.15
    border_background: str = "white"
    border_tolerance: int = 16
    border_min_fraction: float = 0.5
    max_zoom: float = 0.5
    border_margin: float = 0.04
    sheet_examples: int = 8


def config_from_params(section: Mapping[str, Any]) -> ImageCleanConfig:
    """Validate the ``image_clean`` section (nested as in params.yaml) into a config.

    Raises :class:`~rakuten.errors.PipelineError` naming the dotted key of the first bad value.
    """
    p = {SECTION: section}
    k = SECTION + "."
    return ImageCleanConfig(
        size=P.integer(p, k + "size", 32, 1024),
        jpeg_quality=P.integer(p, k + "jpeg_quality", 50, 100),
        n_jobs=P.integer(p, k + "n_jobs", 1, 256),
        min_side=P.integer(p, k + "min_side", 2, 512),
        cross_class_weight=float(P.number(p, k + "near_duplicates.cross_class_weight", 0.0, 1.0)),
        blur_threshold=float(P.number(p, k + "blur.threshold", 0.0)),
        sharpen_amount=float(P.number(p, k + "blur.sharpen_amount", 0.0, 5.0)),
        sharpen_sigma=float(P.number(p, k + "blur.sharpen_sigma", 0.1, 20.0)),
        red_threshold=float(P.number(p, k + "red_cast.threshold", 1.0, lo_open=True)),
        red_method=P.choice(p, k + "red_cast.method", RED_CAST_METHODS),
        saturation_reduction=float(P.number(p, k + "red_cast.saturation_reduction", 0.0, 1.0)),
        border_background=P.choice(p, k + "border.background", BORDER_BACKGROUNDS),
        border_tolerance=P.integer(p, k + "border.tolerance", 0, 128),
        border_min_fraction=float(P.number(p, k + "border.min_fraction", 0.0, 1.0)),
        max_zoom=float(P.number(p, k + "border.max_zoom", 0.0, 10.0)),
        border_margin=float(P.number(p, k + "border.margin", 0.0, 0.5)),
        sheet_examples=P.integer(p, k + "contact_sheet.examples", 0, 100),
    )

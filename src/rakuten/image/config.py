"""The ``image_clean`` params section, declared once as a frozen config mirroring ``params.yaml``.

Why a dataclass: the per-image worker runs in other processes, so it gets one small picklable
object instead of a nested dict, and every key is checked (with its dotted name in the error)
before any image is touched (:func:`rakuten.core.config.parse_section`). The hashing knobs (hash size,
radius, crop variants) live in the ``image_hash`` section (:mod:`rakuten.image.image_hash`):
duplicates are found before the split.
"""

from __future__ import annotations

from dataclasses import dataclass

from rakuten.core.config import knob

RED_CAST_METHODS = ("gray_world", "saturation", "equalize", "none")
BORDER_BACKGROUNDS = ("white", "uniform")


@dataclass(frozen=True)
class NearDuplicates:
    """``image_clean.near_duplicates``: the duplicate policy (clusters come from ``image_hash``)."""

    cross_class_weight: float = knob(
        0.5, "sample_weight of kept train rows in a cluster spanning classes (study: reduced weight)", lo=0.0, hi=1.0
    )


@dataclass(frozen=True)
class Blur:
    """``image_clean.blur``: detection and sharpening."""

    threshold: float = knob(
        8.0,
        "sharpness below this = blurry: variance of the Laplacian / mean gradient "
        "magnitude, at <= 112 px whatever the source size (quality.blur_score)",
        lo=0.0,
    )
    sharpen_amount: float = knob(1.0, "unsharp mask: out = img + amount * (img - gaussian(img, sigma))", lo=0.0, hi=5.0)
    sharpen_sigma: float = knob(1.0, "unsharp mask sigma, in output pixels", lo=0.1, hi=20.0)


@dataclass(frozen=True)
class RedCast:
    """``image_clean.red_cast``: detection and correction."""

    threshold: float = knob(
        1.15, "mean R / mean(G, B) above this = red cast (study: red 10-15% above G and B)", lo=1.0, lo_open=True
    )
    method: str = knob(
        "gray_world", "gray_world | saturation (study: -15%) | equalize | none", choices=RED_CAST_METHODS
    )
    saturation_reduction: float = knob(0.15, "share of saturation removed by the saturation method", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class Border:
    """``image_clean.border``: a product drawn small inside a wide uniform border is cropped and zoomed."""

    background: str = knob(
        "white", "white (the study's case) | uniform (any uniform colour)", choices=BORDER_BACKGROUNDS
    )
    tolerance: int = knob(16, "max channel difference to the border colour", lo=0, hi=128)
    min_fraction: float = knob(0.5, "crop when the border covers at least this share of the area", lo=0.0, hi=1.0)
    max_zoom: float = knob(
        0.5, "enlarge the product at most 1 + max_zoom times (study: zoom up to 50%)", lo=0.0, hi=10.0
    )
    margin: float = knob(0.04, "kept around the product, as a share of the image side", lo=0.0, hi=0.5)


@dataclass(frozen=True)
class ContactSheet:
    """``image_clean.contact_sheet``: the before/after figures."""

    examples: int = knob(8, "lines per reports/figures/image_clean/<defect>.png", lo=0, hi=100)


@dataclass(frozen=True)
class ImageCleanConfig:
    """``image_clean``: duplicates, blur, red cast, borders (study 2.3); the image model's input images."""

    size: int = knob(224, "side (px) of data/processed/images/<row_id>.jpg, the image model's input", lo=32, hi=1024)
    jpeg_quality: int = knob(95, "JPEG quality of the cleaned images", lo=50, hi=100)
    n_jobs: int = knob(2, "worker processes", lo=1, hi=256, runtime=True)
    min_side: int = knob(16, "a smaller source (e.g. 1x1) is unusable: grey placeholder, readable=false", lo=2, hi=512)
    near_duplicates: NearDuplicates = knob(NearDuplicates(), "duplicate policy")
    blur: Blur = knob(Blur(), "blur detection and sharpening")
    red_cast: RedCast = knob(RedCast(), "red cast detection and correction")
    border: Border = knob(Border(), "border crop and zoom")
    contact_sheet: ContactSheet = knob(
        ContactSheet(),
        "before/after contact sheets (not part of the cleaning models are trained on)",
        runtime=True,
        report=True,
    )

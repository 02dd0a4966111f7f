"""Small pieces of the report's HTML: escaping, fixed number formats, class names and inline pictures.

Why fixed formats and pictures rebuilt from their pixels: the report is a DVC output, so the same inputs
must give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from rakuten.contracts.classes import CLASS_LABELS
from rakuten.core.errors import PipelineError

TITLE_CHARS = 140  # longer product titles are cut in captions (the full title stays in the tooltip)


def esc(value: object) -> str:
    """HTML-escaped text of ``value`` (quotes too: the result may sit in an attribute)."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A score with 4 decimals, or an em dash for a missing one (fixed format: stable bytes)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{float(value):.4f}"


def class_name(code: int) -> str:
    """``2583 Autour de la piscine``: the code with its French label."""
    return f"{code} {CLASS_LABELS[int(code)]}"


def jpeg_uri(image: Image.Image, quality: int) -> str:
    """``image`` as a baseline JPEG ``data:`` URI. Re-built from its pixels first, so no EXIF, ICC profile
    or timestamp of the source is carried: the bytes depend on the pixels and the quality only
    (as :func:`rakuten.evaluation.gradcam.data_uri`, which has no quality setting)."""
    rgb = image.convert("RGB")
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def open_rgb(path: str | Path) -> Image.Image:
    """The picture at ``path`` in RGB; a missing or broken file is one line naming it and the stage
    that writes it (every picture the report shows is an image_clean output)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot read the image ({exc}); rerun `dvc repro image_clean`") from None


def thumbnail(path: str | Path, side: int) -> Image.Image:
    """The picture at ``path`` shrunk so that its longest side is at most ``side`` (never enlarged)."""
    img = open_rgb(path)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


def img_tag(uri: str, image: Image.Image, alt: str, css: str = "") -> str:
    """An ``<img>`` with its intrinsic size (no layout shift) and escaped ``alt``."""
    klass = f' class="{css}"' if css else ""
    return f'<img{klass} src="{uri}" width="{image.width}" height="{image.height}" alt="{esc(alt)}">'


def short(text: str, limit: int = TITLE_CHARS) -> str:
    """``text`` cut at ``limit`` characters with an ellipsis (cut before escaping: no broken entity)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"

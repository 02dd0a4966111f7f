"""Reading one product photo once, at reduced size when the target allows, whatever its format.

Why here and not in each detector: decoding dominates the cost of the stage, so every image is
read and decoded exactly once. A JPEG at least twice (four times) the output size is decoded with
libjpeg's DCT scaling (``IMREAD_REDUCED_COLOR_2``/``_4``), which is several times faster than a full
decode. Anything unusual is converted and counted, never a crash:

* grayscale / CMYK JPEGs: converted to BGR by OpenCV (status ``converted_L`` / ``converted_CMYK``);
* RGBA / LA / palette images with transparency: composited on white (``converted_RGBA`` ...);
* formats OpenCV cannot read: decoded by Pillow (``converted_<format>``);
* a JPEG without its end marker: what can be decoded is kept (``truncated``);
* missing, empty, corrupt, or smaller than ``min_side`` (e.g. 1x1): no image (``missing``,
  ``unreadable``, ``tiny``); the caller writes a neutral grey placeholder with ``readable=False``;
* not a regular file (a FIFO...), or over the size budget: no image (``not_a_file``,
  ``oversized``), decided by :mod:`rakuten.core.image_files` (the one guarded reader) before decoding.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile

from rakuten.core.errors import PipelineError
from rakuten.core.image_files import JPEG as _JPEG
from rakuten.core.image_files import image_header, jpeg_header, over_budget, png_chunks_fit, read_image_bytes

__all__ = ["Decoded", "decode_bytes", "decode_image", "jpeg_header", "reduced_flag", "rows_and_paths"]

_EOI = b"\xff\xd9"
_ALPHA_MODES = ("RGBA", "LA", "PA")


@dataclass
class Decoded:
    """Result of :func:`decode_image`: ``image`` is BGR uint8 or None when unusable."""

    image: np.ndarray | None
    status: str
    sha1: str
    width: int = 0
    height: int = 0


_FLAGS = {
    False: (cv2.IMREAD_COLOR, cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_COLOR_4),
    True: (cv2.IMREAD_GRAYSCALE, cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_GRAYSCALE_4),
}


def rows_and_paths(rows, what: str) -> tuple[np.ndarray, list[str]]:
    """Validated ``row_id`` array and image paths (``""`` where missing) of a catalog slice.

    ``what`` names the input in the one-line error (e.g. ``catalog``, ``catalog rows``).
    """
    for column in ("row_id", "image_path"):
        if column not in rows.columns:
            raise PipelineError(f"{what}: missing column '{column}'; expected row_id and image_path")
    row_ids = rows["row_id"].to_numpy(np.int64)
    if len(np.unique(row_ids)) != len(row_ids):
        raise PipelineError(f"{what}: row_id values repeat; expected one row per row_id")
    paths = ["" if p is None or (isinstance(p, float) and np.isnan(p)) else str(p) for p in rows["image_path"].tolist()]
    return row_ids, paths


def reduced_flag(width: int, height: int, target: int, grey: bool = False) -> int:
    """OpenCV read flag that decodes at 1/4 or 1/2 scale while staying >= ``target`` px
    (grey flags for callers that need only luminance)."""
    side = min(width, height)
    full, half, quarter = _FLAGS[grey]
    if side >= 4 * target:
        return quarter
    if side >= 2 * target:
        return half
    return full


def _pillow_decode(data: bytes, grey: bool = False) -> np.ndarray | None:
    """Decode with Pillow (truncated files allowed), alpha composited on white; BGR (or grey) or None."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
                else:
                    rgb = im.convert("RGB")
                if grey:
                    return np.asarray(rgb.convert("L"))
                return cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
    except Exception:  # noqa: BLE001 - corrupt data of any kind
        return None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _is_truncated_jpeg(data: bytes) -> bool:
    return data.startswith(_JPEG) and _EOI not in data[-64:]


def decode_bytes(data: bytes, target: int, min_side: int, grey: bool = False, digest: bool = True) -> Decoded:
    """Decode image bytes for an output of ``target`` px (see module docstring for statuses);
    ``grey=True`` decodes a single grey channel (for callers that need only luminance; hashing
    decodes in colour for its colour check); ``digest=False`` skips the
    SHA-1 (``image_clean`` takes it from the ``image_hash`` table)."""
    sha1 = hashlib.sha1(data).hexdigest() if digest else ""
    header = image_header(data)
    if header is None:
        return Decoded(None, "unreadable", sha1)
    fmt, mode, width, height, transparent = header
    if over_budget(header):
        return Decoded(None, "oversized", sha1, width, height)
    if min(width, height) < min_side:
        return Decoded(None, "tiny", sha1, width, height)
    image = None
    if not transparent and (fmt != "PNG" or png_chunks_fit(data)):  # else Pillow: see png_chunks_fit
        flag = reduced_flag(width, height, target, grey) if data.startswith(_JPEG) else _FLAGS[grey][0]
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        image = _pillow_decode(data, grey)
        if image is None:
            return Decoded(None, "unreadable", sha1, width, height)
        status = f"converted_{mode if transparent or fmt == 'JPEG' else fmt}"
    elif mode not in ("RGB",):
        status = f"converted_{mode}"
    else:
        status = "ok"
    if _is_truncated_jpeg(data):
        status = "truncated"
    return Decoded(image, status, sha1, width, height)


def decode_image(path: str | Path, target: int, min_side: int, grey: bool = False, digest: bool = True) -> Decoded:
    """Read (:func:`rakuten.core.image_files.read_image_bytes`) and decode one file; a missing,
    unreadable, special or oversized file gives ``image=None`` and a status."""
    data, status = read_image_bytes(path)
    if data is None:
        return Decoded(None, status, "")
    return decode_bytes(data, target, min_side, grey, digest)

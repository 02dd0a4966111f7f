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
  ``unreadable``, ``tiny``); the caller writes a neutral grey placeholder with ``readable=False``.
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

from rakuten.errors import PipelineError

_JPEG = b"\xff\xd8\xff"
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


_FLAGS = {False: (cv2.IMREAD_COLOR, cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_COLOR_4),
          True: (cv2.IMREAD_GRAYSCALE, cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_GRAYSCALE_4)}


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
    paths = ["" if p is None or (isinstance(p, float) and np.isnan(p)) else str(p)
             for p in rows["image_path"].tolist()]
    return row_ids, paths


def reduced_flag(width: int, height: int, target: int, grey: bool = False) -> int:
    """OpenCV read flag that decodes at 1/4 or 1/2 scale while staying >= ``target`` px
    (grey flags for the hashing pass, which needs no colour)."""
    side = min(width, height)
    full, half, quarter = _FLAGS[grey]
    if side >= 4 * target:
        return quarter
    if side >= 2 * target:
        return half
    return full


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame (not DHT/JPG/DAC)
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # what Pillow reports for these component counts


def jpeg_header(data: bytes) -> tuple[str, int, int] | None:
    """(mode, width, height) from a JPEG's start-of-frame segment, or None when not found.

    Why not Pillow here: ``Image.open`` costs ~0.25 ms per file in Python, ~10% of cleaning one
    image; walking the marker segments to the frame header costs ~10 us. Anything this walk
    does not understand falls back to Pillow (:func:`_header`).
    """
    if not data.startswith(_JPEG):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF_MARKERS:
            if i + 10 > n or length < 8:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            mode = _JPEG_MODES.get(data[i + 9])
            return (mode, width, height) if mode and width and height else None
        i += 2 + length
    return None


def _header(data: bytes) -> tuple[str, str, int, int, bool] | None:
    """(format, mode, width, height, has_transparency) from the header only, or None."""
    jpeg = jpeg_header(data)
    if jpeg is not None:
        return "JPEG", jpeg[0], jpeg[1], jpeg[2], False
    try:
        with Image.open(io.BytesIO(data)) as im:
            transparent = im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)
            return im.format or "", im.mode, im.width, im.height, transparent
    except Exception:  # noqa: BLE001 - any parser failure means "not an image Pillow knows"
        return None


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
    ``grey=True`` decodes a single grey channel (the hashing pass); ``digest=False`` skips the
    SHA-1 (``image_clean`` takes it from the ``image_hash`` table)."""
    sha1 = hashlib.sha1(data).hexdigest() if digest else ""
    header = _header(data)
    if header is None:
        return Decoded(None, "unreadable", sha1)
    fmt, mode, width, height, transparent = header
    if min(width, height) < min_side:
        return Decoded(None, "tiny", sha1, width, height)
    image = None
    if not transparent:
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
    """Read and decode one file; a missing or unreadable file gives ``image=None`` and a status."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return Decoded(None, "missing", "")
    except OSError:
        return Decoded(None, "unreadable", "")
    if not data:
        return Decoded(None, "unreadable", "")
    return decode_bytes(data, target, min_side, grey, digest)

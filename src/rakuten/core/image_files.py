"""The one guarded way to open an image file: regular files only, bounded bytes, bounded pixels.

Why one reader: every stage that looks at a product photo (``ingest``'s check, ``image_hash``,
``image_clean``, its contact sheets, ``rakuten predict``) must survive whatever sits at the path:

* only a **regular file** is opened, and it is opened non-blocking, so a FIFO, socket or device
  where a photo is expected is a bad image (``not_a_file``) instead of a stage that hangs forever;
* a file larger than :data:`MAX_FILE_BYTES`, or whose header declares a picture whose padded
  square exceeds :data:`MAX_PIXELS` pixels (a 36000x30000 photo, a small file with a forged header,
  a 20x60000 strip), is a bad image (``oversized``) decided from the header alone, before anything
  is decoded;
* a file whose header cannot be parsed (an image signature followed by garbage) is
  ``unreadable`` here, where ``ingest.on_bad_image`` decides, not later in ``image_clean``.

The budget is a code constant, not a param, for the reason OpenCV's and Pillow's limits are: it is
a safety bound that must be the same in training and in prediction, and every stage that decodes
images depends on this file in ``dvc.yaml``, so changing it reruns them. 64 megapixels is 8000x8000,
more than any phone camera; a 500x500 catalog photo is 0.25. The budget counts the square the
picture is padded to (``max(w, h)`` a side), since that is what hashing and cleaning allocate.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import NamedTuple

from PIL import Image

MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 4 * MAX_PIXELS  # more than an uncompressed RGBA image within the pixel budget
HEADER_BYTES = 1 << 16  # a JPEG's frame header sits after its EXIF/ICC segments, nearly always here
JPEG = b"\xff\xd8\xff"
SIGNATURES = (JPEG, b"\x89PNG", b"GIF8", b"BM", b"RIFF")
_ALPHA_MODES = ("RGBA", "LA", "PA")
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame (not DHT/JPG/DAC)
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # what Pillow reports for these component counts

STATUS_TEXT = {
    "missing": "missing",
    "unreadable": "unreadable (not an image this pipeline can read)",
    "not_a_file": "not a regular file",
    "oversized": f"over the size budget ({MAX_PIXELS:,} pixels)",
}


class Header(NamedTuple):
    """What an image file's header says, read without decoding any pixel."""

    format: str
    mode: str
    width: int
    height: int
    transparent: bool


def jpeg_header(data: bytes) -> tuple[str, int, int] | None:
    """(mode, width, height) from a JPEG's start-of-frame segment, or None when not found.

    Why not Pillow here: ``Image.open`` costs ~0.25 ms per file in Python, ~10% of cleaning one
    image; walking the marker segments to the frame header costs ~10 us. Anything this walk
    does not understand falls back to Pillow (:func:`image_header`).
    """
    if not data.startswith(JPEG):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x00:  # a stuffed zero: libjpeg skips it as garbage and rescans; let Pillow (which agrees) decide
            return None
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF_MARKERS:
            if i + 10 > n or length < 8:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            mode = _JPEG_MODES.get(data[i + 9])
            return (mode, width, height) if mode and width and height else None
        i += 2 + length
    return None


def image_header(data: bytes) -> Header | None:
    """The header of image bytes (JPEG by :func:`jpeg_header`, others by Pillow), or None."""
    jpeg = jpeg_header(data)
    if jpeg is not None:
        return Header("JPEG", jpeg[0], jpeg[1], jpeg[2], False)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size is judged by over_budget(), so a huge header reads as "oversized"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                transparent = im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)
                return Header(im.format or "", im.mode, im.width, im.height, transparent)
    except Exception:  # noqa: BLE001 - any parser failure means "not an image Pillow knows"
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def over_budget(header: Header) -> bool:
    """True when the square the image is padded to (hashing and cleaning pad to ``max(w, h)``
    a side) would exceed :data:`MAX_PIXELS`: a 20x60000 strip is 1.2 Mpx but a 3.6 Gpx square."""
    return max(header.width, header.height) ** 2 > MAX_PIXELS


def png_chunks_fit(data: bytes) -> bool:
    """True when every chunk of PNG ``data`` declares no more bytes than the file holds after it.

    Why: OpenCV's PNG reader allocates a chunk's declared length before reading it, so a 60-byte
    file declaring a 2 GB chunk costs 2 GB; such a file is decoded by Pillow, which reads in blocks.
    """
    i, n = 8, len(data)
    while i + 8 <= n:
        length = int.from_bytes(data[i : i + 4], "big")
        if i + 12 + length > n:
            return False
        if data[i + 4 : i + 8] == b"IEND":
            return True
        i += 12 + length
    return True


def _open_regular(path: str | Path) -> tuple[int | None, int, str]:
    """(fd, size, status): a non-blocking descriptor of a regular file, or None and why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, 0, "missing"
    except OSError:  # permission denied, a symlink loop, a name too long...
        return None, 0, "unreadable"
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None, 0, "not_a_file"
    if info.st_size > MAX_FILE_BYTES:
        os.close(fd)
        return None, 0, "oversized"
    return fd, info.st_size, "ok"


def _read(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_image_bytes(path: str | Path) -> tuple[bytes | None, str]:
    """The bytes of a regular file within :data:`MAX_FILE_BYTES` and ``ok``, or None and the status."""
    fd, size, status = _open_regular(path)
    if fd is None:
        return None, status
    try:
        data = _read(fd, min(size, MAX_FILE_BYTES) + 1)  # +1: a file that grew past the budget is caught
    except OSError:
        return None, "unreadable"
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        return None, "oversized"
    return (data, "ok") if data else (None, "unreadable")


def probe_image(path: str | Path) -> str:
    """``ok``, ``missing``, ``unreadable``, ``not_a_file`` or ``oversized``, from the header only.

    Reads :data:`HEADER_BYTES` (the whole file only when the header lies beyond them), so checking
    a catalog's images costs one small read per file.
    """
    fd, size, status = _open_regular(path)
    if fd is None:
        return status
    try:
        head = _read(fd, HEADER_BYTES)
        if not head.startswith(SIGNATURES):
            return "unreadable"
        header = image_header(head)
        if header is None and size > len(head):
            header = image_header(head + _read(fd, MAX_FILE_BYTES))
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)
    if header is None:
        return "unreadable"
    return "oversized" if over_budget(header) else "ok"

"""What a client may send the service, checked: each problem is a :class:`RequestError`, one line
naming the field and what was expected (4xx), never a traceback.

Why its own module: these checks are the whole of what the routes trust; they know the limits
(:class:`~rakuten.serving.serve.limits.ServeLimits`) and the X_test layout, not the models.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from rakuten.core.errors import PipelineError
from rakuten.data.ingest import X_COLUMNS, catalog_rows, read_official_csv
from rakuten.serving.http_guards import RequestError
from rakuten.serving.serve.limits import ServeLimits

IMAGE_NAME = re.compile(r"image_(\d+)_product_(\d+)\.jpg")
SINGLE_FIELDS = ("designation", "description", "explain", "image")
BATCH_FIELDS = ("csv", "images")
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


def content_type(request: Request) -> str:
    """The request's media type, lower case, without its parameters (``""`` when none is given)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_image(data: bytes, field: str, limits: ServeLimits) -> None:
    """An upload the pipeline can read: size, format and decoded size within the limits."""
    if len(data) == 0:
        raise RequestError(422, f"{field}: empty file; expected an image")
    if len(data) > limits.max_image_mb * 1e6:
        raise RequestError(413, f"{field}: {len(data) / 1e6:.1f} MB, larger than the {limits.max_image_mb:g} MB limit")
    try:
        with warnings.catch_warnings():
            # PIL's own bomb guard (a warning, an error past twice its limit) fires in Image.open, before
            # our pixel check could: both are the 413 of an oversized image, not an unreadable one
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
                if w * h > limits.max_image_pixels:
                    raise RequestError(413, f"{field}: {w}x{h} pixels, more than the {limits.max_image_pixels} limit")
                img.verify()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(
            413,
            f"{field}: {one_line(exc)}; more than the {limits.max_image_pixels} pixels limit (a decompression bomb?)",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError(415, f"{field}: not a readable image; expected a JPEG, PNG or WebP file") from None
    if fmt not in IMAGE_FORMATS:
        raise RequestError(415, f"{field}: {fmt} image; expected one of {', '.join(IMAGE_FORMATS)}")


def one_line(value: Any, width: int = 120) -> str:
    """``value`` as one short line: an error message must stay one line whatever the client sent."""
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _text(value: Any, field: str) -> str:
    """A text field: absent is empty; anything but valid Unicode text is refused."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(422, f"{field}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")  # JSON's \ud800 escapes decode to lone surrogates, which no later step can write
    except UnicodeEncodeError as exc:
        raise RequestError(
            400, f"{field}: lone surrogate {value[exc.start]!r} at character {exc.start}; expected valid Unicode text"
        ) from None
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook: a key given twice is refused (JSON parsers disagree on which wins)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise RequestError(422, f"{key!r}: given twice in the JSON body; expected each field once")
        found[key] = value
    return found


def parse_json_body(raw: bytes) -> Any:
    """The JSON body of ``POST /predict``: 400 for what is not JSON (or nested past the parser's
    recursion limit), 422 for a duplicate key; never an unexpected 500."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError(400, "body: not valid JSON; expected an object with designation, description") from None
    except RecursionError:
        raise RequestError(
            400, "body: JSON nested too deeply; expected a flat object with designation, description"
        ) from None


def _flag(value: Any, field: str) -> bool:
    """A true/false field, as JSON (a boolean) or a form (``true``, ``1``, ``on``...) sends it."""
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return False
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise RequestError(422, f"{field}: expected true or false, got {one_line(repr(value), 60)}")


def single_product(fields: dict[str, Any], has_image: bool, limits: ServeLimits) -> tuple[str, str, bool]:
    """(designation, description, explain) of a single-product request, checked."""
    unknown = sorted(set(fields) - set(SINGLE_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; expected {', '.join(SINGLE_FIELDS)}")
    designation = _text(fields.get("designation"), "designation")
    description = _text(fields.get("description"), "description")
    if len(designation) + len(description) > limits.max_text_chars:
        raise RequestError(
            413,
            f"designation + description: {len(designation) + len(description)} characters, "
            f"more than the {limits.max_text_chars} limit",
        )
    if not designation.strip() and not description.strip() and not has_image:
        raise RequestError(422, "no input: give a designation, a description or an image")
    return designation, description, _flag(fields.get("explain"), "explain")


def batch_image_name(filename: str | None) -> str:
    """The file name of a batch image, which must follow the X_test layout's pattern."""
    name = Path(filename or "").name
    if not IMAGE_NAME.fullmatch(name):
        raise RequestError(422, f"images: file name {filename!r}; expected image_<imageid>_product_<productid>.jpg")
    return name


async def form_fields(
    request: Request, limits: ServeLimits, max_files: int, max_bytes: float
) -> tuple[dict[str, Any], dict[str, list]]:
    """Text fields and uploads of a multipart/urlencoded form: refused at once past ``max_bytes`` by its
    length header, else while it streams (:class:`~rakuten.serving.http_guards.Guard` counts the bytes
    as the parser reads them)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise RequestError(
            413, f"request body of {int(length) / 1e6:.1f} MB, larger than the {max_bytes / 1e6:g} MB limit"
        )
    try:
        form = await request.form(max_files=max_files, max_fields=64, max_part_size=int(limits.max_image_mb * 1e6) + 1)
    except (RequestError, ClientDisconnect):  # over the limit, stalled, or gone while streaming
        raise
    except HTTPException as exc:
        raise RequestError(413 if "size" in str(exc.detail).lower() else 400, f"form: {exc.detail}") from None
    except Exception as exc:  # malformed multipart body
        raise RequestError(400, f"form: cannot parse the multipart body ({type(exc).__name__})") from None
    fields: dict[str, Any] = {}
    files: dict[str, list] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.setdefault(key, []).append(value)
        elif key in fields:
            raise RequestError(422, f"{key}: given twice")
        else:
            fields[key] = value
    return fields, files


def batch_rows(x_path: Path, name: str, image_dir: Path, limits: ServeLimits) -> pd.DataFrame:
    """Catalog rows of an uploaded batch CSV; errors name the uploaded file, not the temporary copy."""
    try:
        x = read_official_csv(x_path, X_COLUMNS)
        if len(x) == 0:
            raise PipelineError(f"{x_path}: no rows to classify")
        if len(x) > limits.max_batch_rows:
            raise RequestError(413, f"csv: {len(x)} rows, more than the {limits.max_batch_rows} limit")
        chars = x["designation"].fillna("").str.len() + x["description"].fillna("").str.len()
        over = np.flatnonzero(chars.to_numpy() > limits.max_text_chars)
        if len(over):  # the single-product text limit holds for every row of a batch too
            at = int(over[0])
            raise RequestError(
                413,
                f"csv {name}: data row {at + 1} (index {x.index[at]}): designation + description: "
                f"{int(chars.iloc[at])} characters, more than the {limits.max_text_chars} limit",
            )
        rows, _ = catalog_rows(x, x_path, image_dir)
    except PipelineError as exc:
        raise RequestError(422, str(exc).replace(str(x_path), f"csv {name}")) from None
    return rows

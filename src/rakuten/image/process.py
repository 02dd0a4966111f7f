"""Cleaning one image: decode once, measure, correct, resize, write; returns its quality record.

This is the unit of work of the parallel pool (:mod:`rakuten.image.image_clean`): a module-level
function of picklable arguments. Order of operations, and why:

1. decode (reduced size when possible) and pad to a square (no distortion on resize);
   hashes and duplicate groups come from the ``image_hash`` stage (:mod:`rakuten.image.image_hash`);
2. find the content inside a uniform border; measure blur and red ratio on that content only
   (a wide white border would otherwise read as "blurry" and dilute a cast);
3. crop/zoom the border, correct the cast, resize to the output size, then sharpen at the output
   resolution (the unsharp mask radius is in output pixels, i.e. what the model sees);
4. write the JPEG; an unusable source gets a neutral grey placeholder and ``readable=False``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rakuten.image import correct, quality
from rakuten.image.config import ImageCleanConfig
from rakuten.image.decode import decode_image

NAN = float("nan")


def write_jpeg(image: np.ndarray, path: Path, quality_: int) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality_])
    if not ok:  # pragma: no cover - OpenCV cannot fail on a valid uint8 BGR array
        raise RuntimeError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def clean_image(row_id: int, source: str, out_dir: str, cfg: ImageCleanConfig) -> dict:
    """Clean ``source`` into ``out_dir/<row_id>.jpg`` and return the row's quality record.

    The record holds the quality-table columns known from this image alone.
    """
    decoded = decode_image(source, cfg.size, cfg.min_side, digest=False)
    out_path = Path(out_dir) / f"{row_id}.jpg"
    record = {
        "row_id": row_id,
        "readable": decoded.image is not None,
        "decode_status": decoded.status,
        "blur_score": NAN,
        "is_blurry": False,
        "red_ratio": NAN,
        "red_ratio_after": NAN,
        "is_red_cast": False,
        "border_fraction": NAN,
        "has_border": False,
        "actions": "",
    }
    if decoded.image is None:
        write_jpeg(correct.placeholder(cfg.size), out_path, cfg.jpeg_quality)
        record["actions"] = f"placeholder:{decoded.status}"
        return record
    actions = [] if decoded.status == "ok" else [decoded.status]
    image = decoded.image
    if image.shape[0] != image.shape[1]:
        image = correct.to_square(image)
        actions.append("pad_square")
    side = image.shape[0]
    box, fraction = quality.content_box(image, cfg.border.background, cfg.border.tolerance)
    content = image[box[1] : box[3], box[0] : box[2]]
    ratio = quality.red_ratio(content)
    record.update(
        red_ratio=ratio,
        is_red_cast=ratio > cfg.red_cast.threshold,
        border_fraction=fraction,
        has_border=fraction >= cfg.border.min_fraction and fraction > 0,
    )
    unchanged = fraction == 0 and not (record["is_red_cast"] and cfg.red_cast.method != "none")
    if record["has_border"]:
        x0, y0, x1, y1 = correct.zoom_box(box, side, cfg.border.max_zoom, cfg.border.margin)
        image = image[y0:y1, x0:x1]
        actions.append(f"crop_zoom:{side / (x1 - x0):.2f}")
    if record["is_red_cast"] and cfg.red_cast.method != "none":
        image = correct.correct_red_cast(image, cfg.red_cast.method, cfg.red_cast.saturation_reduction)
        actions.append(f"red_cast:{cfg.red_cast.method}")
    image = correct.resize_square(image, cfg.size)
    # a full-frame, uncorrected picture shrunk to `size` is exactly what blur_score would measure:
    # reuse it instead of a second area resize (the costliest step after decoding)
    score = quality.blur_score(image if unchanged and side > cfg.size else content, max_side=cfg.size)
    record.update(blur_score=score, is_blurry=score < cfg.blur.threshold)
    if record["is_blurry"] and cfg.blur.sharpen_amount > 0:
        image = correct.unsharp_mask(image, cfg.blur.sharpen_amount, cfg.blur.sharpen_sigma)
        actions.append("sharpen")
    record["red_ratio_after"] = quality.red_ratio(image)
    record["actions"] = ";".join(actions)
    write_jpeg(image, out_path, cfg.jpeg_quality)
    return record


def clean_task(task: tuple[int, str, str, ImageCleanConfig]) -> dict:
    """Pool entry point: unpack one ``(row_id, source, out_dir, cfg)`` task."""
    return clean_image(*task)

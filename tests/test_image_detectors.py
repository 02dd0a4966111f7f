"""Detectors, corrections and decoding on constructed images with a known defect."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from rakuten.image import correct, quality
from rakuten.image.decode import decode_bytes, decode_image, jpeg_header, reduced_flag
from rakuten.image.neighbours import hamming
from rakuten.image.phash import hash_variants


def scene(size: int = 128, seed: int = 0) -> np.ndarray:
    """A textured, noisy product-like picture with balanced colours."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 140, np.uint8)
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, c, int(rng.integers(4, size // 5)), tuple(int(v) for v in rng.integers(40, 220, 3)), -1)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, q: int = 90) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()


def test_blur_score_separates_a_known_blur():
    img = scene()
    blurred = cv2.GaussianBlur(img, (0, 0), 3.0)
    assert quality.blur_score(img) > 40 > quality.blur_score(blurred)
    sharpened = correct.unsharp_mask(blurred, 1.0, 1.0)
    assert quality.blur_score(sharpened) > quality.blur_score(blurred)


def test_blur_score_is_measured_at_the_output_resolution():
    img = scene(448)
    assert quality.blur_score(img, max_side=224) == pytest.approx(
        quality.blur_score(cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)), rel=0.01)


@pytest.mark.param_effect("image_clean.red_cast.method")
@pytest.mark.parametrize("method", ["gray_world", "saturation", "equalize"])
def test_red_cast_is_detected_and_reduced(method):
    img = scene().astype(np.float32)
    img[..., 2] *= 1.3
    cast = np.clip(img, 0, 255).astype(np.uint8)
    assert quality.red_ratio(scene()) < 1.15 < quality.red_ratio(cast)
    fixed = correct.correct_red_cast(cast, method, 0.15)
    assert quality.red_ratio(fixed) < quality.red_ratio(cast)
    if method == "gray_world":
        assert quality.red_ratio(fixed) == pytest.approx(1.0, abs=0.02)
    assert correct.correct_red_cast(cast, "none") is cast


@pytest.mark.param_effect("image_clean.border.max_zoom")
def test_white_border_box_and_crop_zoom_limit():
    canvas = np.full((200, 200, 3), 255, np.uint8)
    canvas[50:110, 70:130] = scene(60)
    box, fraction = quality.content_box(canvas, "white", 16)
    assert box == (70, 50, 130, 110)
    assert fraction == pytest.approx(1 - 60 * 60 / 200 ** 2)
    x0, y0, x1, y1 = correct.zoom_box(box, 200, max_zoom=0.5, margin=0.0)
    assert x1 - x0 == y1 - y0 == 134  # ceil(200 / 1.5): at most a 1.5x zoom
    assert x0 <= 70 and x1 >= 130 and y0 <= 50 and y1 >= 110
    x0, y0, x1, y1 = correct.zoom_box(box, 200, max_zoom=5.0, margin=0.0)
    assert (x0, y0, x1, y1) == (70, 50, 130, 110)


@pytest.mark.param_effect("image_clean.border.background")
def test_no_border_on_a_full_frame_photo_or_a_grey_background():
    assert quality.content_box(scene(), "white", 16)[1] == 0.0
    grey = np.full((100, 100, 3), 90, np.uint8)
    grey[30:70, 30:70] = 200
    assert quality.content_box(grey, "white", 16)[1] == 0.0
    assert quality.content_box(grey, "uniform", 16)[1] == pytest.approx(1 - 0.16)


def test_reencoded_cropped_copy_stays_within_radius_unrelated_does_not():
    img = scene(256, seed=1)
    copy = cv2.imdecode(np.frombuffer(jpeg(cv2.resize(img[8:248, 8:248], (256, 256)), 60), np.uint8), 1)
    crops = (0.0, 0.0125, 0.025, 0.0375, 0.05)

    def grey(image):
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

    a, b = hash_variants(grey(img), 16, crops), hash_variants(grey(copy), 16, crops)
    other = hash_variants(grey(scene(256, seed=2)), 16, crops)
    near = min(int(hamming(a[v], b[0])) for v in range(len(crops)))
    far = min(int(hamming(a[v], other[0])) for v in range(len(crops)))
    assert near <= 24 < far


def test_reduced_decoding_only_when_the_source_is_large_enough():
    assert reduced_flag(500, 500, 224) == cv2.IMREAD_REDUCED_COLOR_2
    assert reduced_flag(1000, 1000, 224) == cv2.IMREAD_REDUCED_COLOR_4
    assert reduced_flag(300, 300, 224) == cv2.IMREAD_COLOR
    decoded = decode_bytes(jpeg(scene(500)), 224, 16)
    assert decoded.status == "ok" and decoded.image.shape == (250, 250, 3)


def _pil_bytes(image: Image.Image, fmt: str) -> bytes:
    import io
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_unusual_files_are_converted_or_reported(tmp_path):
    rgb = Image.fromarray(scene(64)[..., ::-1])
    grey = decode_bytes(_pil_bytes(rgb.convert("L"), "JPEG"), 64, 16)
    assert grey.status == "converted_L" and grey.image.shape == (64, 64, 3)
    cmyk = decode_bytes(_pil_bytes(rgb.convert("CMYK"), "JPEG"), 64, 16)
    assert cmyk.status == "converted_CMYK" and cmyk.image.shape == (64, 64, 3)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited on white
    png = decode_bytes(_pil_bytes(rgba, "PNG"), 64, 16)
    assert png.status == "converted_RGBA" and png.image.min() == 255
    data = jpeg(scene(64))
    truncated = decode_bytes(data[: len(data) * 2 // 3], 64, 16)
    assert truncated.status == "truncated" and truncated.image is not None
    assert decode_bytes(_pil_bytes(Image.new("RGB", (1, 1)), "JPEG"), 64, 16).status == "tiny"
    assert decode_bytes(b"\xff\xd8\xff garbage", 64, 16).status == "unreadable"
    assert decode_image(tmp_path / "absent.jpg", 64, 16).status == "missing"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert decode_image(tmp_path / "empty.jpg", 64, 16).image is None


@pytest.mark.parametrize("mode,options", [("L", {}), ("CMYK", {}), ("RGB", {"progressive": True}),
                                          ("RGB", {"exif": b"Exif\x00\x00", "subsampling": 0})])
def test_fast_jpeg_header_agrees_with_pillow(mode, options):
    import io
    image = Image.fromarray(scene(48)[..., ::-1]).resize((70, 40)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, "JPEG", **options)
    with Image.open(io.BytesIO(buf.getvalue())) as reference:
        assert jpeg_header(buf.getvalue()) == (reference.mode, reference.width, reference.height)
    assert jpeg_header(_pil_bytes(image.convert("RGB"), "PNG")) is None
    assert jpeg_header(b"\xff\xd8\xff garbage") is None

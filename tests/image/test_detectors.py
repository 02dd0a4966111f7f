"""Detectors, corrections and decoding on constructed images with a known defect."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from rakuten.image import correct, quality
from rakuten.image.config import Blur
from rakuten.image.decode import decode_bytes, decode_image, jpeg_header, reduced_flag
from rakuten.image.neighbours import hamming
from rakuten.image.phash import hash_variants

THRESHOLD = Blur().threshold


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
    assert quality.blur_score(img) > THRESHOLD > quality.blur_score(blurred)
    sharpened = correct.unsharp_mask(blurred, 1.0, 1.0)
    assert quality.blur_score(sharpened) > quality.blur_score(blurred)
    assert quality.blur_score(np.full((64, 64, 3), 128, np.uint8)) == 0.0  # flat: no edges, no detail


def test_blur_score_is_measured_at_a_fixed_scale_capped_by_max_side():
    img = scene(448)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    at = {side: cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA) for side in (quality.BLUR_SIDE, 64)}
    assert quality.blur_score(img) == pytest.approx(quality.blur_score(at[quality.BLUR_SIDE]), rel=1e-4)
    # max_side (the output side) first shrinks the picture as resize_square does, so the output picture
    # that clean_image reuses measures the same (up to the rounding of grey before or after the resize);
    # above BLUR_SIDE it barely matters, below it sets the scale
    for side in (224, 64):
        output = correct.resize_square(img, side)
        assert quality.blur_score(img, max_side=side) == pytest.approx(quality.blur_score(output, side), rel=0.01)
        assert quality.blur_score(output[..., 0], side) == quality.blur_score(img[..., 0], side)  # grey: exact
    assert quality.blur_score(img, max_side=224) == pytest.approx(quality.blur_score(img), rel=0.01)
    assert quality.blur_score(img, max_side=64) == pytest.approx(quality.blur_score(at[64]), rel=0.05)
    small = scene(80)
    assert quality.blur_score(small) == quality.blur_score(small, max_side=224)  # never upscaled


def edges(side: int, n: int = 1, contrast: int = 60, blur: float = 0.0) -> np.ndarray:
    """``n`` x ``n`` flat squares on grey (no noise), drawn at relative coordinates; ``blur`` is the
    Gaussian sigma as a share of the side."""
    img = np.full((side, side), 120, np.uint8)
    cell = side / n
    for i in range(n):
        for j in range(n):
            x0, y0 = int((i + 0.25) * cell), int((j + 0.25) * cell)
            img[y0 : int(y0 + cell / 2), x0 : int(x0 + cell / 2)] = 120 + contrast
    return cv2.GaussianBlur(img.astype(np.float32), (0, 0), blur * side) if blur else img


def test_blur_score_is_scale_free_and_does_not_depend_on_the_number_of_edges():
    # the same blur (3% of the side) reads the same whatever the source size
    scores = [quality.blur_score(edges(side, blur=0.03)) for side in (128, 250, 500, 1000)]
    assert max(scores) < 1.15 * min(scores) and max(scores) < THRESHOLD / 4
    # sharp: about the same score for one square or 16 (per unit of edge), while the study's variance
    # of the Laplacian alone grows with the edge length, so a sparse clean picture read as blurry
    # (448 px: the squares' edges fall on the 112 px grid)
    one, many = quality.blur_score(edges(448, 1)), quality.blur_score(edges(448, 4))
    assert THRESHOLD * 3 < one and 0.9 < many / one < 1.2
    laplacian = [
        cv2.Laplacian(cv2.resize(edges(448, n), (112, 112), interpolation=cv2.INTER_AREA), cv2.CV_32F).var()
        for n in (1, 4)
    ]
    assert laplacian[1] > 3.5 * laplacian[0]
    # sharper edges score higher: monotone in the blur
    ladder = [quality.blur_score(edges(500, 2, blur=b)) for b in (0.0, 0.005, 0.01, 0.02, 0.04)]
    assert ladder == sorted(ladder, reverse=True)


def product(side: int, plain: bool = False, blur: float = 0.0, seed: int = 0) -> np.ndarray:
    """A sample-like product photo drawn at relative coordinates, so one picture exists at any side:
    pixel noise (sigma 7) like the generator's; ``plain``: one low-contrast shape on a gradient, the
    little edge content that read as blurry at 500 px; ``blur``: Gaussian sigma as a share of the
    side (the generator plants 2.5-4.5%)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-25, 25, side, dtype=np.float32)[None, :, None]
    img = (np.full((side, side, 3), 150, np.float32) + ramp).astype(np.uint8)

    def px(v: float) -> int:
        return int(round(v * side))

    if not plain:
        for k in np.arange(-1, 1, 1 / 8):
            cv2.line(img, (px(k), 0), (px(k + 1), side), (90, 170, 120), max(1, side // 64))
        cv2.circle(img, (px(0.3), px(0.75)), px(0.06), (60, 60, 60), -1)
    cv2.rectangle(img, (px(0.2), px(0.25)), (px(0.8), px(0.75)), (125, 125, 125) if plain else (120, 110, 170), -1)
    img = np.clip(img + rng.normal(0, 7, img.shape), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (0, 0), blur * side) if blur else img


@pytest.mark.parametrize("plain,q", [(False, 90), (True, 60)])  # q60: a re-encoded near copy
def test_same_picture_gets_the_same_blur_decision_at_128_and_500_px(tmp_path, plain, q):
    """Through ``clean_image`` (reduced decode of the 500 px JPEG, default config): clean -> not
    flagged, planted blur -> flagged, at both sizes. The old measure (variance of the Laplacian at
    <= 224 px, threshold 40) flagged the plain q60 picture at 500 px (score 39) but not at 128 px (69);
    the new score is 29-30 at both."""
    from rakuten.image import process
    from rakuten.image.config import ImageCleanConfig

    def flagged(image: np.ndarray) -> bool:
        path = tmp_path / f"{image.shape[0]}.jpg"
        path.write_bytes(jpeg(image, q))
        return process.clean_image(0, str(path), str(tmp_path), ImageCleanConfig(n_jobs=1))["is_blurry"]

    for blur, expected in ((0.0, False), (0.025, True), (0.045, True)):
        assert [flagged(product(side, plain, blur)) for side in (128, 500)] == [expected, expected], blur


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
    assert fraction == pytest.approx(1 - 60 * 60 / 200**2)
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


@pytest.mark.parametrize(
    "mode,options",
    [("L", {}), ("CMYK", {}), ("RGB", {"progressive": True}), ("RGB", {"exif": b"Exif\x00\x00", "subsampling": 0})],
)
def test_fast_jpeg_header_agrees_with_pillow(mode, options):
    import io

    image = Image.fromarray(scene(48)[..., ::-1]).resize((70, 40)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, "JPEG", **options)
    with Image.open(io.BytesIO(buf.getvalue())) as reference:
        assert jpeg_header(buf.getvalue()) == (reference.mode, reference.width, reference.height)
    assert jpeg_header(_pil_bytes(image.convert("RGB"), "PNG")) is None
    assert jpeg_header(b"\xff\xd8\xff garbage") is None

"""Cleaning one image (rakuten.image.process) on synthetic pictures with known defects (docs/mutation.md).

The decoder is replaced by a stub where a test needs a given decode status, so these tests pin the
decisions of ``clean_image`` (flags, actions, the written picture), not the decoder's.
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from rakuten.image import correct, process, quality
from rakuten.image.config import Blur, Border, ImageCleanConfig, RedCast
from rakuten.image.decode import Decoded

SIZE = 32
CFG = ImageCleanConfig(size=SIZE, n_jobs=1)
NAN_COLUMNS = ("blur_score", "red_ratio", "red_ratio_after", "border_fraction")


def checker(side: int = 64, cell: int = 4, dark=(0, 0, 0), light=(255, 255, 255)) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    mask = ((yy // cell + xx // cell) % 2).astype(bool)
    out = np.empty((side, side, 3), np.uint8)
    out[mask], out[~mask] = light, dark
    return out


def stub(monkeypatch, image, status="ok"):
    calls = []

    def fake(source, target, min_side, digest=True):
        calls.append((source, target, min_side, digest))
        return Decoded(None if image is None else image.copy(), status, "")

    monkeypatch.setattr(process, "decode_image", fake)
    return calls


def written(tmp_path, row_id=7):
    return cv2.imread(str(tmp_path / f"{row_id}.jpg"))


def test_unusable_source_gets_a_grey_placeholder(tmp_path, monkeypatch):
    calls = stub(monkeypatch, None, "missing")
    record = process.clean_image(7, "src.jpg", str(tmp_path), replace(CFG, min_side=20))
    assert calls == [("src.jpg", SIZE, 20, False)]
    nan = {k: record.pop(k) for k in NAN_COLUMNS}
    assert all(math.isnan(v) for v in nan.values())
    assert record == {
        "row_id": 7,
        "readable": False,
        "decode_status": "missing",
        "is_blurry": False,
        "is_red_cast": False,
        "has_border": False,
        "actions": "placeholder:missing",
    }
    out = written(tmp_path)
    assert out.shape == (SIZE, SIZE, 3) and abs(float(out.mean()) - 128) < 1


def test_sharp_clean_picture_is_only_resized(tmp_path, monkeypatch):
    image = checker()
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), CFG)
    resized = correct.resize_square(image, SIZE)
    assert record["readable"] is True and record["decode_status"] == "ok" and record["actions"] == ""
    assert record["red_ratio"] == pytest.approx(1.0) and record["is_red_cast"] is False
    assert record["border_fraction"] == 0.0 and record["has_border"] is False
    assert record["blur_score"] == pytest.approx(quality.blur_score(image, max_side=SIZE))
    assert record["blur_score"] > CFG.blur.threshold and record["is_blurry"] is False
    assert record["red_ratio_after"] == pytest.approx(quality.red_ratio(resized))
    out = written(tmp_path)
    assert out.shape == (SIZE, SIZE, 3)
    assert np.abs(out.astype(int) - resized.astype(int)).mean() < 6  # the same picture, through JPEG


def test_non_square_picture_is_padded_and_its_status_kept(tmp_path, monkeypatch):
    stub(monkeypatch, checker()[:, :40], "converted_L")
    record = process.clean_image(3, "s", str(tmp_path), replace(CFG, border=Border(min_fraction=0.99)))
    assert record["actions"] == "converted_L;pad_square"
    assert record["readable"] is True and record["decode_status"] == "converted_L"
    assert written(tmp_path, 3).shape == (SIZE, SIZE, 3)


def test_wide_white_border_is_cropped_and_zoomed(tmp_path, monkeypatch):
    image = np.full((64, 64, 3), 255, np.uint8)
    image[24:40, 24:40] = checker(16, 2, dark=(30, 30, 30), light=(200, 200, 200))
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), CFG)
    # content 16 x 16 in 64 x 64: border share 1 - 256/4096; crop = max(16 + 2 * 0.04 * 64, ceil(64 / 1.5)) = 43
    assert record["border_fraction"] == pytest.approx(1 - 256 / 4096)
    assert record["has_border"] is True
    assert record["actions"] == "crop_zoom:1.49"  # 64 / 43
    content = image[24:40, 24:40]
    assert record["blur_score"] == pytest.approx(quality.blur_score(content, max_side=SIZE))
    assert record["red_ratio"] == pytest.approx(quality.red_ratio(content))
    crop = image[10:53, 10:53]  # left = round(32 - 21.5) = 10
    expected = correct.resize_square(crop, SIZE)
    assert np.abs(written(tmp_path).astype(int) - expected.astype(int)).mean() < 8
    below = process.clean_image(8, "s", str(tmp_path), replace(CFG, border=Border(min_fraction=0.95)))
    assert below["has_border"] is False and below["actions"] == ""


def test_no_border_is_never_cropped_even_with_min_fraction_zero(tmp_path, monkeypatch):
    stub(monkeypatch, checker())
    record = process.clean_image(7, "s", str(tmp_path), replace(CFG, border=Border(min_fraction=0.0)))
    assert record["border_fraction"] == 0.0 and record["has_border"] is False and record["actions"] == ""


def test_red_cast_is_flagged_and_corrected(tmp_path, monkeypatch):
    image = checker(dark=(40, 40, 120), light=(90, 90, 240))
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), CFG)
    # means: B = G = 65, R = 180 -> ratio 180 / 65
    assert record["red_ratio"] == pytest.approx(180 / 65)
    assert record["is_red_cast"] is True
    assert record["actions"] == "red_cast:gray_world"
    # the blur score is measured on the uncorrected content, not on the corrected picture
    assert record["blur_score"] == pytest.approx(quality.blur_score(image, max_side=SIZE))
    assert record["red_ratio_after"] == pytest.approx(1.0, abs=0.02)
    assert record["red_ratio_after"] == pytest.approx(
        quality.red_ratio(correct.resize_square(correct.correct_red_cast(image, "gray_world"), SIZE))
    )
    out = written(tmp_path).astype(float)
    assert abs(out[..., 2].mean() - out[..., 0].mean()) < 5  # red no longer dominates


def test_red_cast_detected_but_left_when_method_is_none(tmp_path, monkeypatch):
    image = checker(dark=(40, 40, 120), light=(90, 90, 240))
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), replace(CFG, red_cast=RedCast(method="none")))
    assert record["is_red_cast"] is True and record["actions"] == ""
    assert record["red_ratio_after"] == pytest.approx(quality.red_ratio(correct.resize_square(image, SIZE)))
    high = process.clean_image(7, "s", str(tmp_path), replace(CFG, red_cast=RedCast(threshold=180 / 65 + 0.01)))
    assert high["is_red_cast"] is False and high["actions"] == ""
    at = process.clean_image(7, "s", str(tmp_path), replace(CFG, red_cast=RedCast(threshold=180 / 65)))
    assert at["is_red_cast"] is False  # strictly above the threshold


def test_blurry_picture_is_sharpened_unless_amount_is_zero(tmp_path, monkeypatch):
    image = cv2.GaussianBlur(checker(cell=8, dark=(100, 100, 100), light=(140, 140, 140)), (0, 0), 4)
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), CFG)
    score = quality.blur_score(image, max_side=SIZE)
    assert record["blur_score"] == pytest.approx(score) and score < CFG.blur.threshold
    assert record["is_blurry"] is True and record["actions"] == "sharpen"
    resized = correct.resize_square(image, SIZE)
    sharpened = correct.unsharp_mask(resized, CFG.blur.sharpen_amount, CFG.blur.sharpen_sigma)
    assert record["red_ratio_after"] == pytest.approx(quality.red_ratio(sharpened))
    plain = process.clean_image(7, "s", str(tmp_path), replace(CFG, blur=Blur(sharpen_amount=0.0)))
    assert plain["is_blurry"] is True and plain["actions"] == ""
    at = process.clean_image(7, "s", str(tmp_path), replace(CFG, blur=Blur(threshold=score)))
    assert at["is_blurry"] is False  # strictly below the threshold


def test_small_source_is_enlarged_and_measured_on_the_content(tmp_path, monkeypatch):
    image = checker(side=16, cell=2)
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), CFG)
    assert record["blur_score"] == pytest.approx(quality.blur_score(image, max_side=SIZE))
    assert written(tmp_path).shape == (SIZE, SIZE, 3)


def test_real_png_file_through_the_decoder(tmp_path):
    image = checker()
    cv2.imwrite(str(tmp_path / "in.png"), image)
    (tmp_path / "out").mkdir()
    record = process.clean_task((11, str(tmp_path / "in.png"), str(tmp_path / "out"), CFG))
    assert record["row_id"] == 11 and record["readable"] is True and record["decode_status"] == "ok"
    assert record["actions"] == ""
    assert (tmp_path / "out" / "11.jpg").is_file()


@pytest.mark.parametrize("q", [50, 95])
def test_write_jpeg_uses_the_quality(tmp_path, q):
    image = checker(cell=3, dark=(10, 80, 200), light=(250, 30, 60))
    process.write_jpeg(image, tmp_path / "x.jpg", q)
    assert (tmp_path / "x.jpg").read_bytes() == cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()


def noise(side: int = 64, lo: int = 60, hi: int = 200, red: int = 0, seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(lo, hi, (side, side, 3)).astype(np.int32)
    image[..., 2] += red
    return np.clip(image, 0, 255).astype(np.uint8)


def test_blur_of_an_unchanged_large_picture_is_measured_on_the_output_picture(tmp_path, monkeypatch):
    # no border, no cast: the score is the output picture's (the 32 px resize), which differs slightly from
    # a resize of the grey content
    image = noise()
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), CFG)
    assert record["actions"] == ""
    assert record["blur_score"] == quality.blur_score(correct.resize_square(image, SIZE), max_side=SIZE)
    assert record["blur_score"] != quality.blur_score(image, max_side=SIZE)


def test_blur_of_a_cast_picture_left_uncorrected_is_measured_on_the_output_picture(tmp_path, monkeypatch):
    image = noise(red=120)
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), replace(CFG, red_cast=RedCast(method="none")))
    assert record["is_red_cast"] is True and record["actions"] == ""
    assert record["blur_score"] == quality.blur_score(correct.resize_square(image, SIZE), max_side=SIZE)
    corrected = process.clean_image(7, "s", str(tmp_path), CFG)  # corrected: measured on the content
    assert corrected["actions"] == "red_cast:gray_world"
    assert corrected["blur_score"] == quality.blur_score(image, max_side=SIZE)


def test_saturation_method_uses_the_configured_reduction(tmp_path, monkeypatch):
    image = checker(dark=(40, 40, 120), light=(90, 90, 240))
    stub(monkeypatch, image)
    cfg = replace(CFG, red_cast=RedCast(method="saturation", saturation_reduction=0.6))
    record = process.clean_image(7, "s", str(tmp_path), cfg)
    assert record["actions"] == "red_cast:saturation"
    expected = correct.resize_square(correct.correct_red_cast(image, "saturation", 0.6), SIZE)
    assert record["red_ratio_after"] == pytest.approx(quality.red_ratio(expected))
    default = correct.resize_square(correct.correct_red_cast(image, "saturation"), SIZE)
    assert record["red_ratio_after"] != pytest.approx(quality.red_ratio(default))


def test_border_detection_follows_background_and_tolerance(tmp_path, monkeypatch):
    product = checker(16, 2, dark=(30, 30, 30), light=(200, 200, 200))
    black = np.zeros((64, 64, 3), np.uint8)
    black[24:40, 24:40] = product
    stub(monkeypatch, black)
    white_only = process.clean_image(7, "s", str(tmp_path), CFG)  # background "white": a black frame is content
    assert white_only["has_border"] is False and white_only["border_fraction"] == 0.0
    uniform = process.clean_image(7, "s", str(tmp_path), replace(CFG, border=Border(background="uniform")))
    assert uniform["has_border"] is True and uniform["border_fraction"] == pytest.approx(1 - 256 / 4096)
    grey = np.full((64, 64, 3), 230, np.uint8)  # near-white: within 30, not within 16
    grey[24:40, 24:40] = product
    stub(monkeypatch, grey)
    assert process.clean_image(7, "s", str(tmp_path), CFG)["has_border"] is False
    assert process.clean_image(7, "s", str(tmp_path), replace(CFG, border=Border(tolerance=30)))["has_border"] is True


def test_border_share_equal_to_min_fraction_is_cropped(tmp_path, monkeypatch):
    image = np.full((64, 64, 3), 255, np.uint8)
    image[24:40, 24:40] = checker(16, 2, dark=(30, 30, 30), light=(200, 200, 200))
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), replace(CFG, border=Border(min_fraction=1 - 256 / 4096)))
    assert record["has_border"] is True and record["actions"] == "crop_zoom:1.49"


def test_measures_use_the_content_box_off_centre(tmp_path, monkeypatch):
    # content at rows 8-28, columns 30-58 (not square, not on the diagonal)
    image = np.full((64, 64, 3), 255, np.uint8)
    content = noise(side=28, lo=0, hi=150, red=60, seed=3)[:20]
    image[8:28, 30:58] = content
    stub(monkeypatch, image)
    record = process.clean_image(7, "s", str(tmp_path), replace(CFG, red_cast=RedCast(threshold=5.0)))
    assert record["border_fraction"] == pytest.approx(1 - 20 * 28 / 4096)
    assert record["red_ratio"] == pytest.approx(quality.red_ratio(content))
    assert record["blur_score"] == pytest.approx(quality.blur_score(content, max_side=SIZE))


def test_placeholder_is_written_at_the_configured_quality(tmp_path, monkeypatch):
    stub(monkeypatch, None, "unreadable")
    process.clean_image(7, "s", str(tmp_path), replace(CFG, jpeg_quality=60))
    expected = cv2.imencode(".jpg", correct.placeholder(SIZE), [cv2.IMWRITE_JPEG_QUALITY, 60])[1].tobytes()
    assert (tmp_path / "7.jpg").read_bytes() == expected

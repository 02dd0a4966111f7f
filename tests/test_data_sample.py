"""The generator: determinism, realism (proportions, languages, missing descriptions) and planted defects."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from rakuten.classes import CLASS_CODES, class_proportions
from rakuten.config import defaults, parse_section
from rakuten.data.sample import SampleConfig, proportional_labels, red_ratio, write_sample
from rakuten.errors import PipelineError
from tests.conftest import TINY


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tiny_sample, tmp_path):
    write_sample(TINY, tmp_path / "again")
    assert _tree_digest(tmp_path / "again") == _tree_digest(tiny_sample)


@pytest.mark.param_effect("sample.seed")
def test_other_seed_and_worker_count(tmp_path):
    small = SampleConfig(n_train=60, n_test=5, image_size=32, seed=1, n_jobs=1)
    write_sample(small, tmp_path / "a")
    write_sample(SampleConfig(**{**small.__dict__, "n_jobs": 2}), tmp_path / "b")
    write_sample(SampleConfig(**{**small.__dict__, "seed": 2}), tmp_path / "c")
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_official_layout(tiny_sample):
    x = pd.read_csv(tiny_sample / "X_train_update.csv", index_col=0)
    y = pd.read_csv(tiny_sample / "Y_train_CVw08PX.csv", index_col=0)
    xt = pd.read_csv(tiny_sample / "X_test_update.csv", index_col=0)
    assert list(x.columns) == ["designation", "description", "productid", "imageid"]
    assert list(y.columns) == ["prdtypecode"]
    assert (tiny_sample / "X_train_update.csv").read_text().startswith(",designation,description,productid,imageid")
    assert len(x) == TINY.n_train and len(xt) == TINY.n_test
    assert list(xt.index) == list(range(TINY.n_train, TINY.n_train + TINY.n_test))
    assert (x.index == y.index).all()
    for frame, folder in ((x, "image_train"), (xt, "image_test")):
        for iid, pid in zip(frame["imageid"], frame["productid"]):
            assert (tiny_sample / "images" / folder / f"image_{iid}_product_{pid}.jpg").is_file()


def test_class_proportions_follow_the_official_counts():
    labels = proportional_labels(8491, np.random.default_rng(0))
    counts = pd.Series(labels).value_counts().reindex(CLASS_CODES).to_numpy()
    expected = class_proportions() * 8491
    assert np.all(np.abs(counts - expected) <= 1)
    small = pd.Series(proportional_labels(100, np.random.default_rng(0))).value_counts()
    assert set(small.index) == set(CLASS_CODES)  # every class present even when tiny


def test_text_realism(tiny_sample):
    x = pd.read_csv(tiny_sample / "X_train_update.csv", index_col=0)
    truth = json.loads((tiny_sample / "defects.json").read_text())
    n = TINY.n_train + TINY.n_test
    assert 0.27 <= x["description"].isna().mean() <= 0.43
    share = {lang: len(rows) / n for lang, rows in truth["languages"].items()}
    assert 0.10 <= share["en"] <= 0.20 and 0.01 <= share["de"] <= 0.06 and share["fr"] >= 0.7
    described = x["description"].dropna()
    assert described.str.contains("<").mean() > 0.4 and described.str.contains("&[a-z]+;|&#", regex=True).any()
    for src, dst in truth["duplicate_texts"]:
        assert x.loc[src, "designation"] == x.loc[dst, "designation"]
    assert truth["mojibake_rows"] and all("Ã" in x.loc[i, "designation"] for i in truth["mojibake_rows"]
                                          if i < TINY.n_train)


def test_conflicting_duplicates_have_different_labels(tmp_path):
    cfg = SampleConfig(n_train=1500, n_test=0, image_size=32, seed=3, n_jobs=1)
    write_sample(cfg, tmp_path / "s")
    y = pd.read_csv(tmp_path / "s" / "Y_train_CVw08PX.csv", index_col=0)["prdtypecode"]
    truth = json.loads((tmp_path / "s" / "defects.json").read_text())
    assert truth["conflicting_duplicate_texts"], "expected at least one conflicting duplicate at this size"
    for src, dst in truth["conflicting_duplicate_texts"]:
        assert y[src] != y[dst]
    for src, dst in truth["duplicate_texts"]:
        if [src, dst] not in truth["conflicting_duplicate_texts"]:
            assert y[src] == y[dst]


def _laplacian_var(path: Path) -> float:
    return float(cv2.Laplacian(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), cv2.CV_64F).var())


def test_planted_image_defects_exist_as_recorded(tiny_sample):
    defects = json.loads((tiny_sample / "defects.json").read_text())["image_defects"]
    for name in ("exact_duplicates", "near_duplicates", "blur", "red_cast", "border"):
        assert defects[name], f"no {name} planted"
    for group in defects["exact_duplicates"]:
        assert len({(tiny_sample / f).read_bytes() for f in group}) == 1
    for group in defects["near_duplicates"]:
        a, b = (cv2.imread(str(tiny_sample / f)).astype(float) for f in group[:2])
        assert (tiny_sample / group[0]).read_bytes() != (tiny_sample / group[1]).read_bytes()
        assert np.abs(cv2.resize(a, (16, 16)) - cv2.resize(b, (16, 16))).mean() < 25
    blurred = {f for f in defects["blur"]}
    all_files = [p for p in (tiny_sample / "images").rglob("*.jpg")]
    clean = [p for p in all_files if p.relative_to(tiny_sample).as_posix() not in blurred][:30]
    assert max(_laplacian_var(tiny_sample / f) for f in defects["blur"]) < min(map(_laplacian_var, clean))
    for f in defects["red_cast"]:
        assert red_ratio(cv2.imread(str(tiny_sample / f))) > 1.12
    for f in defects["border"]:
        img = cv2.imread(str(tiny_sample / f))
        assert (img.min(axis=2) > 240).mean() > 0.5  # mostly white frame


def test_config_rejects_too_small_catalog():
    with pytest.raises(PipelineError, match=r"sample\.n_train = 10, expected an integer in \[54, inf\]"):
        parse_section(SampleConfig, {**defaults(SampleConfig), "n_train": 10}, "sample")

"""The generator: determinism, realism (proportions, languages, missing descriptions) and planted defects."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from rakuten.contracts.classes import CLASS_CODES, class_proportions
from rakuten.core.config import defaults, parse_section
from rakuten.core.errors import PipelineError
from rakuten.data.sample import images
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.defects import DEFECT_TYPES, plan_image_defects
from rakuten.data.sample.generate import write_sample
from rakuten.data.sample.images import red_ratio, render_product
from rakuten.data.sample.labels import proportional_labels, siblings
from rakuten.data.sample.noise import plant_label_noise
from tests.conftest import TINY


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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


def test_worker_count_never_changes_a_byte(tmp_path):
    """Every file (the three CSVs, defects.json, each JPEG of every defect kind) is the same whether
    1, 2 or 3 processes render the images: each row's noise offset and draws come from its own RNG."""
    cfg = SampleConfig(n_train=60, n_test=10, image_size=64, seed=5, n_jobs=1)
    digests = []
    for n_jobs in (1, 2, 3):
        images._noise_bank.cache_clear()  # workers build their own bank (not one forked from this process)
        write_sample(replace(cfg, n_jobs=n_jobs), tmp_path / f"jobs{n_jobs}")
        digests.append(_tree_digest(tmp_path / f"jobs{n_jobs}"))
    names = set(digests[0])
    assert {"X_train_update.csv", "Y_train_CVw08PX.csv", "X_test_update.csv", "defects.json"} <= names
    assert sum(name.endswith(".jpg") for name in names) == 70
    defects = json.loads((tmp_path / "jobs1" / "defects.json").read_text())["image_defects"]
    assert all(defects[name] for name in DEFECT_TYPES), "every render path runs in the workers"
    assert digests[0] == digests[1] == digests[2]


def _pixel_noise(code: int, seed: int, monkeypatch) -> np.ndarray:
    """The noise of one clean render: the render minus the same row rendered without noise (noise is
    its last draw), on blue and green (red may be rescaled after) away from 0 and 255 (clipping)."""
    noisy = render_product(code, 128, np.random.default_rng(seed))
    with monkeypatch.context() as patch:
        patch.setattr(images, "add_noise", lambda img, rng: img)
        clean = render_product(code, 128, np.random.default_rng(seed))
    keep = (clean[..., :2] >= 30) & (clean[..., :2] <= 225)
    return (noisy[..., :2].astype(np.int16) - clean[..., :2])[keep]


def test_clean_images_carry_gaussian_pixel_noise_of_sigma_7(monkeypatch):
    noise = [_pixel_noise(code, k, monkeypatch) for k, code in enumerate(CLASS_CODES)]
    pooled = np.concatenate(noise).astype(float)
    assert abs(pooled.mean()) < 0.1 and 6.8 <= pooled.std() <= 7.2, (pooled.mean(), pooled.std())
    assert 2.85 <= ((pooled / pooled.std()) ** 4).mean() <= 3.15  # Gaussian: 3 (uniform 1.8, Laplace 6)
    assert 0.66 <= (np.abs(pooled) <= 7).mean() <= 0.77  # rounded N(0, 7): 0.716
    assert all(6.3 <= n.std() <= 7.7 for n in noise), "every image carries the noise"
    a, b = (_pixel_noise(1280, seed, monkeypatch) for seed in (1, 2))
    size = min(len(a), len(b))
    assert abs(np.corrcoef(a[:size], b[:size])[0, 1]) < 0.05, "two rows must not share one noise pattern"


def test_defects_are_planted_at_their_rates(tiny_sample):
    truth = json.loads((tiny_sample / "defects.json").read_text())["image_defects"]
    p, n = SampleConfig.planted, TINY.n_train + TINY.n_test
    rates = {
        "exact_duplicates": p.exact_duplicate_rate,
        "near_duplicates": p.near_duplicate_rate,
        "blur": p.blur_rate,
        "red_cast": p.red_cast_rate,
        "border": p.border_rate,
    }
    planted = {
        name: (sum(len(group) - 1 for group in truth[name]) if name.endswith("duplicates") else len(truth[name]))
        for name in DEFECT_TYPES
    }
    assert planted == {name: round(rate * n) for name, rate in rates.items()}


def test_duplicate_sources_are_distinct_clean_rows_mostly_of_the_same_class():
    n = 20000
    labels = proportional_labels(n, np.random.default_rng(0))
    defect, source = plan_image_defects(labels, SampleConfig(n_train=n, n_test=0, n_jobs=1), np.random.default_rng(1))
    p = SampleConfig.planted
    for name, rate, same_share in (
        ("exact_duplicates", p.exact_duplicate_rate, 0.8),
        ("near_duplicates", p.near_duplicate_rate, 0.7),
    ):
        rows = np.flatnonzero(defect == name)
        assert len(rows) == round(rate * n) and (source[rows] >= 0).all()
        assert abs((labels[source[rows]] == labels[rows]).mean() - same_share) < 0.07
    used = source[source >= 0]
    assert (source[defect == ""] == -1).all() and (defect[used] == "").all()
    assert len(set(used.tolist())) == len(used), "a clean row is the source of one duplicate at most"


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
    assert truth["mojibake_rows"] and all(
        "Ã" in x.loc[i, "designation"] for i in truth["mojibake_rows"] if i < TINY.n_train
    )


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


# ------------------------------------------------------------------------------------ label noise


@pytest.mark.param_effect("sample.label_noise")
def test_label_noise_switches_its_share_of_labelled_rows_to_sibling_classes():
    n_train, n = 5000, 5400
    labels = proportional_labels(n, np.random.default_rng(0))
    protected = set(range(0, 400, 2))
    given, records = plant_label_noise(labels, n_train, 0.03, 42, protected)
    rows = [r["row"] for r in records]
    assert len(records) == 150 and rows == sorted(rows) and len(set(rows)) == 150
    assert all(r < n_train and r not in protected for r in rows), "only labelled rows, never a duplicated text"
    assert all(r["true"] == labels[r["row"]] and r["given"] in siblings(r["true"]) for r in records)
    changed = np.flatnonzero(given != labels)
    assert changed.tolist() == rows, "exactly the recorded rows change, each to its recorded label"
    assert [int(given[r]) for r in rows] == [r["given"] for r in records]
    again, same = plant_label_noise(labels, n_train, 0.03, 42, protected)
    assert np.array_equal(again, given) and same == records
    assert plant_label_noise(labels, n_train, 0.03, 43, protected)[1] != records
    none, empty = plant_label_noise(labels, n_train, 0.0, 42, protected)
    assert np.array_equal(none, labels) and empty == []
    assert len(plant_label_noise(labels, n_train, 0.1, 42, protected)[1]) == 500


def test_label_noise_never_exceeds_the_rows_that_can_take_it():
    labels = proportional_labels(100, np.random.default_rng(1))
    _, records = plant_label_noise(labels, 100, 0.5, 0, set(range(90)))
    assert sorted(r["row"] for r in records) == list(range(90, 100))


def test_label_noise_changes_y_train_only(tmp_path):
    """Apart from the switched labels (and their record), the catalog is byte-identical with and without noise."""
    base = SampleConfig(n_train=120, n_test=10, image_size=32, seed=4, n_jobs=1, label_noise=0.0)
    write_sample(base, tmp_path / "clean")
    write_sample(replace(base, label_noise=0.1), tmp_path / "noisy")
    clean, noisy = _tree_digest(tmp_path / "clean"), _tree_digest(tmp_path / "noisy")
    assert set(clean) == set(noisy)
    assert sorted(k for k in clean if clean[k] != noisy[k]) == ["Y_train_CVw08PX.csv", "defects.json"]
    y = {k: pd.read_csv(tmp_path / k / "Y_train_CVw08PX.csv", index_col=0)["prdtypecode"] for k in ("clean", "noisy")}
    truth = {k: json.loads((tmp_path / k / "defects.json").read_text()) for k in ("clean", "noisy")}
    records = truth["noisy"]["label_noise"]
    assert len(records) == 12 and truth["clean"]["label_noise"] == []
    assert y["clean"].index[y["clean"] != y["noisy"]].tolist() == [r["row"] for r in records]
    assert all(y["clean"][r["row"]] == r["true"] and y["noisy"][r["row"]] == r["given"] for r in records)
    duplicated = {row for pair in truth["noisy"]["duplicate_texts"] for row in pair}
    assert duplicated and not duplicated & {r["row"] for r in records}
    differ = {k for k in truth["clean"] if truth["clean"][k] != truth["noisy"][k]}
    assert differ == {"config", "label_noise"}
    assert {k for k in truth["clean"]["config"] if truth["clean"]["config"][k] != truth["noisy"]["config"][k]} == {
        "label_noise"
    }

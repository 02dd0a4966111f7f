"""The catalog's files in the official layout: the three CSVs, the image paths and ``defects.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten.data.sample.config import SampleConfig


def image_file_name(imageid: int, productid: int) -> str:
    """The official name of a product's photo."""
    return f"image_{imageid}_product_{productid}.jpg"


def image_files(x: pd.DataFrame, n_train: int) -> list[str]:
    """Each row's image path relative to the catalog root (train rows first, then the official test)."""
    folders = ["image_train" if i < n_train else "image_test" for i in range(len(x))]
    return [
        f"images/{d}/{image_file_name(int(iid), int(pid))}"
        for d, iid, pid in zip(folders, x["imageid"], x["productid"])
    ]


def write_tables(root: Path, x: pd.DataFrame, labels: np.ndarray, n_train: int) -> None:
    """The image folders and the official CSVs (X train, Y train, X test) under ``root``."""
    (root / "images" / "image_train").mkdir(parents=True)
    (root / "images" / "image_test").mkdir(parents=True)
    x.iloc[:n_train].to_csv(root / "X_train_update.csv")
    pd.DataFrame({"prdtypecode": labels[:n_train]}, index=x.index[:n_train]).to_csv(root / "Y_train_CVw08PX.csv")
    x.iloc[n_train:].to_csv(root / "X_test_update.csv")


def write_defects(root: Path, truth: dict) -> None:
    """``defects.json``: the ground truth, keys sorted."""
    (root / "defects.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def ground_truth(files, labels, langs, hard, defect, source, row_truth, n_train, cfg: SampleConfig) -> dict:
    """The ``defects.json`` document: every planted defect, keyed by file or by row (X index).

    ``labels`` are the true labels; ``row_truth`` holds the truths keyed by row that other modules plant
    (duplicate texts, mojibake, ``label_noise``: ``{row, true, given}`` of each switched label)."""
    groups: dict[str, dict[int, list[int]]] = {"exact_duplicates": {}, "near_duplicates": {}}
    for row in np.flatnonzero(source >= 0):
        groups[defect[row]].setdefault(int(source[row]), [int(source[row])]).append(int(row))
    cross = {
        kind: sum(1 for rows in g.values() if len({int(labels[r]) for r in rows}) > 1) for kind, g in groups.items()
    }
    as_files = {kind: sorted([files[r] for r in rows] for rows in g.values()) for kind, g in groups.items()}
    return {
        # n_jobs never changes the output, so it is not recorded
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "n_jobs"}, **asdict(cfg.planted)},
        "image_defects": {
            "exact_duplicates": as_files["exact_duplicates"],
            "near_duplicates": as_files["near_duplicates"],
            "blur": sorted(files[i] for i in np.flatnonzero(defect == "blur")),
            "red_cast": sorted(files[i] for i in np.flatnonzero(defect == "red_cast")),
            "border": sorted(files[i] for i in np.flatnonzero(defect == "border")),
        },
        "cross_class_duplicate_groups": cross,
        "languages": {lang: [int(i) for i in np.flatnonzero(langs == lang)] for lang in sorted(set(langs))},
        "hard_rows": [int(i) for i in np.flatnonzero(hard)],
        **row_truth,
    }

"""Scoring each image detector against the sample catalog's planted ground truth (``defects.json``).

* ``blur``, ``red_cast``, ``border``: sets of rows; precision = flagged and planted / flagged,
  recall = flagged and planted / planted.
* ``exact_duplicates``, ``near_duplicates``: pairs of rows in the same group. Planted groups are
  merged when they share a row (a near copy of an image that also has an exact copy is a near
  duplicate of both). Near-duplicate pairs are the pairs of one near cluster that are *not* exact
  copies of each other, on both sides, so each detector is scored on its own job.

Ground-truth files are named relative to the sample directory (``images/image_train/x.jpg``);
catalog paths are matched on their last three components, so absolute or repo-relative paths both
work.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import PurePosixPath
from typing import Any, Iterable

import numpy as np

from rakuten.core.errors import PipelineError
from rakuten.core.io import read_json

DETECTORS = ("exact_duplicates", "near_duplicates", "blur", "red_cast", "border")
FLAG_COLUMN = {"blur": "is_blurry", "red_cast": "is_red_cast", "border": "has_border"}


def file_key(path: str) -> str:
    """``images/<dir>/<file>`` part of a path: the name ground truth and catalog share."""
    return "/".join(PurePosixPath(str(path).replace("\\", "/")).parts[-3:])


def _pairs(groups: Iterable[Iterable[int]]) -> set[tuple[int, int]]:
    return {(a, b) for g in groups for a, b in combinations(sorted(set(g)), 2)}


def _merge(groups: list[list[int]]) -> list[list[int]]:
    """Union of groups that share a member."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g in filter(None, groups):  # a planted group none of whose files is in the catalog: nothing to merge
        for a in g[1:]:
            parent[find(a)] = find(g[0])
        find(g[0])
    merged: dict[int, list[int]] = {}
    for x in parent:
        merged.setdefault(find(x), []).append(x)
    return list(merged.values())


def precision_recall(predicted: set, truth: set) -> dict[str, Any]:
    """Precision/recall (1.0 when the denominator is empty) with the counts behind them."""
    return _scores(len(predicted), len(truth), len(predicted & truth))


def _scores(predicted: int, planted: int, tp: int) -> dict[str, Any]:
    return {
        "precision": tp / predicted if predicted else 1.0,
        "recall": tp / planted if planted else 1.0,
        "predicted": predicted,
        "planted": planted,
        "true_positives": tp,
    }


def _pair_count(*labels: np.ndarray) -> int:
    """Number of pairs of rows that share each of ``labels`` (rows with a negative label in none)."""
    keep = np.logical_and.reduce([lab >= 0 for lab in labels])
    if not keep.any():
        return 0
    _, counts = np.unique(np.stack([lab[keep] for lab in labels], axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _together(groups: np.ndarray, a: int, b: int) -> bool:
    return bool(groups[a] >= 0 and groups[a] == groups[b])


def score_detectors(table, image_paths: list[str], image_defects: dict) -> tuple[dict[str, dict], int]:
    """``(scores, n_missing)``: precision/recall per detector (keys :data:`DETECTORS`) and the
    number of planted files absent from the catalog (ignored). ``table`` rows align with
    ``image_paths``; ``image_defects`` is the ``image_defects`` object of ``defects.json``.
    """
    position = {file_key(p): i for i, p in enumerate(image_paths)}
    missing = 0

    def rows_of(files: Iterable[str]) -> list[int]:
        nonlocal missing
        out = []
        for f in files:
            if file_key(f) in position:
                out.append(position[file_key(f)])
            else:
                missing += 1
        return out

    report: dict[str, dict] = {}
    for name, column in FLAG_COLUMN.items():
        predicted = set(np.flatnonzero(table[column].to_numpy(bool)).tolist())
        report[name] = precision_recall(predicted, set(rows_of(image_defects.get(name, []))))
    exact_truth_groups = [rows_of(g) for g in image_defects.get("exact_duplicates", [])]
    exact_truth = _pairs(exact_truth_groups)
    all_truth = _pairs(_merge(exact_truth_groups + [rows_of(g) for g in image_defects.get("near_duplicates", [])]))
    near_truth = all_truth - exact_truth
    # predicted pairs are counted, never listed: one photo on 20,000 rows is 2e8 pairs; predicted
    # near pairs are those of a near cluster that are not exact copies of each other
    exact, near = table["exact_dup_group"].to_numpy(np.int64), table["near_dup_group"].to_numpy(np.int64)
    report["exact_duplicates"] = _scores(
        _pair_count(exact), len(exact_truth), sum(_together(exact, a, b) for a, b in exact_truth)
    )
    report["near_duplicates"] = _scores(
        _pair_count(near) - _pair_count(near, exact),
        len(near_truth),
        sum(_together(near, a, b) and not _together(exact, a, b) for a, b in near_truth),
    )
    for name in report:
        report[name]["unit"] = "pairs" if name.endswith("duplicates") else "images"
    return {k: report[k] for k in DETECTORS}, missing


def load_defects(path: str) -> dict:
    """The ``image_defects`` object of a sample's ``defects.json`` (one-line error if absent)."""
    document = read_json(path)
    if not isinstance(document, dict) or "image_defects" not in document:
        raise PipelineError(f"{path}: missing key image_defects; expected the sample generator's ground truth")
    return document["image_defects"]

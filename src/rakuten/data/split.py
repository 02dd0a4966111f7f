"""Duplicate-aware, stratified train/val/test split.

Rows that share a normalised text, the same image bytes, or near-duplicate images (re-encodes,
slight crops: the ``image_hash`` stage's ``near_dup_group``) form one group (union-find), and a
group never straddles two splits: otherwise a model is scored on copies of its training rows.
Without the image-hash table (``image_groups=None``) images are grouped by file SHA-1 only.
Groups are assigned per class (the group's majority label) in a seeded random order until each
split's quota for that class is met, which keeps class proportions within a row or two of exact. A
group joins val or test only when that brings the split closer to its quota (its size is under
twice what the split still lacks), so one large cluster lands in train instead of swamping a small
split; ``reports/split.json`` says how large groups are and how far class shares differ between splits.

Fallback for tiny classes: a class with fewer than 3 groups cannot be in all three splits; all its
rows go to train and the class is listed in ``reports/split.json`` (``classes_train_only``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten.core.config import ConfigError, knob
from rakuten.core.errors import PipelineError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_TRAIN_ROWS = 2  # what tfidf_svm's calibrated SVM needs per class (its stratified calibration folds)
OFFICIAL_TEST = "official_test"
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class SplitConfig:
    """``split``: shares of the labelled rows in train / val / test, and the seed."""

    train: float = knob(0.8, "share of the labelled rows that trains the models", lo=0.0, hi=1.0)
    val: float = knob(0.1, "share used to choose epochs and fusion strategies", lo=0.0, hi=1.0)
    test: float = knob(0.1, "held-out share, only ever scored", lo=0.0, hi=1.0)
    seed: int = knob(42, "order in which duplicate groups fill the splits", lo=0)

    @property
    def fractions(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SPLITS}

    def validate(self, key: str) -> None:
        total = sum(self.fractions.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"{' + '.join(f'{key}.{s}' for s in SPLITS)} = {total:g}, expected them to sum to 1")


def text_key(designation: str, description: str | None) -> str:
    """Duplicate key for a product's text: tags dropped, case/accents/punctuation folded."""
    text = f"{designation} {description or ''}"
    text = unicodedata.normalize("NFKD", _TAG.sub(" ", text).lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", text).strip()


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes, or ``""`` when it cannot be read (no grouping by image then)."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def duplicate_groups(text_keys: list[str], image_keys: list[str], *more_keys: list[str]) -> np.ndarray:
    """Union-find over rows sharing a text key or a non-empty key of any other list (image bytes,
    near-duplicate cluster ...); returns a group id per row."""
    parent = list(range(len(text_keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in (text_keys, image_keys, *more_keys):
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if not key:
                continue
            if key in first:
                a, b = find(i), find(first[key])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[key] = i
    roots = np.array([find(i) for i in range(len(parent))])
    _, group_ids = np.unique(roots, return_inverse=True)
    return group_ids.astype(np.int64)


def assign_splits(
    labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float], seed: int
) -> tuple[np.ndarray, list[int]]:
    """Split label per row; returns ``(splits, classes_train_only)``."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"label": labels, "group": groups})
    sizes = frame.groupby("group").size()
    group_label = frame.groupby("group")["label"].agg(lambda s: s.value_counts().index[0])
    split_of_group: dict[int, str] = {}
    train_only: list[int] = []
    for label in sorted(group_label.unique()):
        members = group_label.index[group_label == label].to_numpy()
        members = members[rng.permutation(len(members))]
        if len(members) < 3:
            train_only.append(int(label))
            split_of_group.update({int(g): "train" for g in members})
            continue
        total = int(sizes.loc[members].sum())
        quotas = {s: max(1, int(round(fractions[s] * total))) if fractions[s] > 0 else 0 for s in ("val", "test")}
        filled = {"val": 0, "test": 0}
        for g in members:
            size = int(sizes.loc[g])
            # a group joins test or val only when that brings the split closer to its quota: one big
            # cluster (a seller's placeholder photo) cannot swamp a small split and skew its classes
            target = next(
                (s for s in ("test", "val") if filled[s] < quotas[s] and size < 2 * (quotas[s] - filled[s])), "train"
            )
            split_of_group[int(g)] = target
            if target != "train":
                filled[target] += size
        if fractions["train"] > 0 and all(split_of_group[int(g)] != "train" for g in members):
            split_of_group[int(members[-1])] = "train"
    return np.array([split_of_group[int(g)] for g in groups], dtype=object), train_only


def _group_keys(groups: np.ndarray, prefix: str) -> list[str]:
    return [f"{prefix}{g}" if g >= 0 else "" for g in groups.tolist()]


def image_group_keys(row_ids: np.ndarray, image_groups: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(exact_keys, near_keys)`` per row from the ``image_hash`` table (``""`` = no group)."""
    missing = [c for c in ("row_id", "exact_dup_group", "near_dup_group") if c not in image_groups.columns]
    if missing:
        raise PipelineError(
            f"image groups: missing column '{missing[0]}'; expected row_id, exact_dup_group, "
            "near_dup_group (data/interim/image_hashes.parquet)"
        )
    table = image_groups.drop_duplicates("row_id").set_index("row_id")
    absent = np.setdiff1d(row_ids, table.index.to_numpy())
    if len(absent):
        raise PipelineError(
            f"image groups: no row for row_id {int(absent[0])} ({len(absent)} catalog rows missing); "
            "rerun the image_hash stage"
        )
    table = table.loc[row_ids]
    return (
        _group_keys(table["exact_dup_group"].to_numpy(np.int64), "e"),
        _group_keys(table["near_dup_group"].to_numpy(np.int64), "n"),
    )


def unioned_near_groups(before: np.ndarray, near_keys: list[str]) -> int:
    """Near-duplicate clusters whose rows were spread over several text/exact-image groups."""
    frame = pd.DataFrame({"near": near_keys, "group": before})
    spread = frame[frame["near"] != ""].groupby("near")["group"].nunique()
    return int((spread > 1).sum())


LARGE_GROUP_ROWS = 20


def group_balance(labels: np.ndarray, groups: np.ndarray, splits: np.ndarray) -> dict:
    """How duplicate groups shape the split: groups above :data:`LARGE_GROUP_ROWS` rows, the largest
    group's share of its class, and the widest gap between a class's share of one split and of another
    (percentage points; 0 would be a perfectly stratified split)."""
    if not len(labels):
        return {
            f"groups_over_{LARGE_GROUP_ROWS}_rows": 0,
            "largest_group_rows": 0,
            "largest_group_class": None,
            "largest_group_share_of_class": 0.0,
            "max_class_share_gap_points": 0.0,
            "max_gap_class": None,
        }
    sizes = np.bincount(groups)
    largest = int(np.argmax(sizes))
    in_largest = groups == largest
    codes, counts = np.unique(labels[in_largest], return_counts=True)
    code = int(codes[np.argmax(counts)])
    shares = pd.crosstab(labels, splits, normalize="columns").reindex(
        columns=[s for s in SPLITS if (splits == s).any()]
    )
    gaps = (shares.max(axis=1) - shares.min(axis=1)) * 100 if shares.shape[1] > 1 else shares.iloc[:, 0] * 0
    return {
        f"groups_over_{LARGE_GROUP_ROWS}_rows": int((sizes > LARGE_GROUP_ROWS).sum()),
        "largest_group_rows": int(sizes[largest]),
        "largest_group_class": code,
        "largest_group_share_of_class": round(float(counts.max() / (labels == code).sum()), 4),
        "max_class_share_gap_points": round(float(gaps.max()), 3),
        "max_gap_class": int(gaps.idxmax()),
    }


def _warn_thin(per_class: pd.DataFrame) -> dict[str, int]:
    """Log one warning naming every class left with fewer than :data:`MIN_TRAIN_ROWS` training rows
    (a class with a single labelled row, or 3 rows spread over train, val and test); return them
    for ``reports/split.json``."""
    thin = {int(code): int(n) for code, n in per_class["train"].items() if n < MIN_TRAIN_ROWS}
    if thin:
        listed = ", ".join(f"{code} ({n} training row{'s' if n != 1 else ''})" for code, n in sorted(thin.items()))
        log.warning(
            "split: prdtypecode %s: fewer than %d training rows; tfidf_svm's calibrated SVM (classifier: "
            "svm) stops on such a class (add labelled rows of it, or set tfidf_svm.classifier to rf, sgd "
            "or logreg)",
            listed,
            MIN_TRAIN_ROWS,
        )
    return {str(code): n for code, n in sorted(thin.items())}


def split_catalog(
    catalog: pd.DataFrame, fractions: dict[str, float], seed: int, image_groups: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, dict]:
    """Assign every catalog row a split; official test rows keep their own. Returns ``(table, report)``.

    ``image_groups`` is the ``image_hash`` table (row_id, exact_dup_group, near_dup_group): rows
    of one exact or near-duplicate image group then share a duplicate group. Without it, rows
    are grouped by the SHA-1 of their image file (exact copies only).
    """
    labelled = catalog[~catalog["is_official_test"]].reset_index(drop=True)
    keys = [text_key(d, s) for d, s in zip(labelled["designation"], labelled["description"])]
    unioned = 0
    if image_groups is None:
        digests = [file_digest(p) if ok else "" for p, ok in zip(labelled["image_path"], labelled["image_ok"])]
        groups = duplicate_groups(keys, digests)
    else:
        exact_keys, near_keys = image_group_keys(labelled["row_id"].to_numpy(np.int64), image_groups)
        groups = duplicate_groups(keys, exact_keys, near_keys)
        unioned = unioned_near_groups(duplicate_groups(keys, exact_keys), near_keys)
    splits, train_only = assign_splits(labelled["prdtypecode"].to_numpy(np.int64), groups, fractions, seed)
    official = catalog[catalog["is_official_test"]]
    table = pd.DataFrame(
        {
            "row_id": np.concatenate([labelled["row_id"].to_numpy(), official["row_id"].to_numpy()]).astype(np.int64),
            "split": np.concatenate([splits, np.full(len(official), OFFICIAL_TEST, dtype=object)]),
            "group_id": np.concatenate([groups, np.full(len(official), -1)]).astype(np.int64),
        }
    ).sort_values("row_id", ignore_index=True)
    group_sizes = np.bincount(groups) if len(groups) else np.array([], int)
    per_class = pd.crosstab(labelled["prdtypecode"], splits).reindex(columns=list(SPLITS), fill_value=0)
    report = {
        "rows": {s: int((table["split"] == s).sum()) for s in (*SPLITS, OFFICIAL_TEST)},
        "fractions_requested": fractions,
        "duplicate_groups": {
            "groups": int(len(group_sizes)),
            "multi_row_groups": int((group_sizes > 1).sum()),
            "rows_in_multi_row_groups": int(group_sizes[group_sizes > 1].sum()),
            "image_groups": "file_sha1" if image_groups is None else "image_hash",
            "near_duplicate_groups_unioned": unioned,
            **group_balance(labelled["prdtypecode"].to_numpy(np.int64), groups, splits),
        },
        "classes_train_only": train_only,
        f"classes_under_{MIN_TRAIN_ROWS}_train_rows": _warn_thin(per_class),
        "per_class": {str(code): {s: int(per_class.loc[code, s]) for s in SPLITS} for code in per_class.index},
    }
    return table, report

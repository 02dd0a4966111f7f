"""``hash_catalog``: content and perceptual hashes of every catalog image, and the duplicate groups.

This runs *before* the split (DVC stage ``image_hash``) so that the split can keep near-duplicate
pictures in one split, and ``image_clean`` reads the groups instead of hashing again.

Per image (process pool, ``n_jobs``), decoded once at reduced size (libjpeg DCT scaling: a 500 px
JPEG is decoded at 125 px, several times faster than a full decode; a pHash only keeps the lowest
frequencies anyway):

* **exact duplicates**: SHA-1 of the file bytes (same bytes = same picture, whatever the pixels);
* **near duplicates**: 256-bit pHashes (``hash_size`` 16) of the picture padded to a square as
  published, and of the same picture cropped by each ``query_crops`` fraction per side, all in one
  batch (:mod:`rakuten.image.phash`); a slight crop of a photo lands within ``radius`` of one of
  its own zoomed variants. Why 256 bits and crop variants: docs/images.md (64-bit pHashes put
  unrelated look-alike products within 2 bits of each other on the sample);
* **verification**: ``verify_side`` px colour thumbnails of the same crops
  (:func:`rakuten.image.phash.thumbnail_variants`), 768 bytes per crop at 16 px;
* rows whose image is missing, unreadable or smaller than ``min_side`` get empty hashes and no
  group (``decode_status`` says why; counted in ``reports/image_hash.json``).

Then over all rows: exact groups (shared SHA-1) and near-duplicate clusters: candidate pairs within
``radius`` over all crop variants, kept when their colour thumbnails differ by at most
``max_colour_difference`` grey levels, clustered so that every two rows of a cluster are near
duplicates of each other (complete ``linkage``; exact copies always together;
:mod:`rakuten.image.neighbours`). Why: on 84,916 generated look-alike photos the pHash alone and
single linkage chained unrelated products into clusters of ~300 rows (pair precision 0.05).

Output (``data/interim/image_hashes.parquet``): row_id, sha1, phash (hex of the un-cropped hash),
exact_dup_group, near_dup_group (-1 = none), decode_status.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterator

import cv2
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from rakuten.core.config import invalid, knob
from rakuten.core.parallel import process_pool
from rakuten.image.correct import to_square
from rakuten.image.decode import decode_image, rows_and_paths
from rakuten.image.neighbours import groups_from_keys, near_duplicate_groups
from rakuten.image.phash import hash_variants, thumbnail_variants

log = logging.getLogger(__name__)

COLUMNS = ["row_id", "sha1", "phash", "exact_dup_group", "near_dup_group", "decode_status"]


@dataclass(frozen=True)
class HashConfig:
    """``image_hash``: decoding and the perceptual hashes that group duplicate images before the split."""

    n_jobs: int = knob(2, "worker processes (the table is identical whatever the count)", lo=1, hi=256, runtime=True)
    min_side: int = knob(16, "a smaller source (e.g. 1x1) gets no hash and no group", lo=2, hi=512)
    hash_size: int = knob(16, "pHash side: 16 -> 256 bits (64 bits cannot tell look-alike products apart)", lo=4, hi=32)
    radius: int = knob(
        24, "max Hamming distance of 256 bits (~9%, the usual 6/64 of a 64-bit pHash); 0 to hash_size^2 / 4"
    )
    query_crops: tuple[float, ...] = knob(
        (0.0, 0.0125, 0.025, 0.0375, 0.05),
        "each image also searched cropped by these fractions per side",
        lo=0.0,
        hi=0.25,
        hi_open=True,
        nonempty=True,
    )
    verify_side: int = knob(16, "side of the colour thumbnails that verify each candidate pair", lo=4, hi=64)
    max_colour_difference: float = knob(
        6.0,
        "a pair within the radius is a near duplicate only if its colour "
        "thumbnails differ by at most this (mean absolute difference, grey "
        "levels, brightness equalised; 255 = no check)",
        lo=0.0,
        hi=255.0,
    )
    linkage: str = knob(
        "complete",
        "complete: rows cluster only when every two of them are near duplicates "
        "(no chaining) | single: connected components (chains look-alikes)",
        choices=("complete", "single"),
    )

    @property
    def nbytes(self) -> int:
        return self.hash_size * self.hash_size // 8

    @property
    def crops(self) -> tuple[float, ...]:
        """The crop fractions searched: ``query_crops`` sorted, without repeats, always with 0 (the picture as is)."""
        return tuple(sorted(set(self.query_crops) | {0.0}))

    def validate(self, key: str) -> None:
        if self.hash_size % 4:
            raise invalid(f"{key}.hash_size", self.hash_size, "a multiple of 4 (whole bytes of hash)")
        bits = self.hash_size * self.hash_size
        if not 0 <= self.radius <= bits // 4:
            raise invalid(f"{key}.radius", self.radius, f"an integer in [0, {bits // 4}]")


Hashed = tuple[str, str, "np.ndarray | None", "np.ndarray | None"]


def hash_image(path: str, cfg: HashConfig) -> Hashed:
    """``(decode_status, sha1, variants, thumbs)`` of one file; ``variants`` is (n_crops, nbytes)
    uint8 and ``thumbs`` (n_crops, verify_side, verify_side, 3) uint8; both None, and sha1 empty,
    when no picture could be decoded."""
    if not path:
        return "missing", "", None, None
    # decode at >= 6 * hash_size px: the crops then still shrink (area filter) onto the DCT input.
    # In colour: libjpeg's reduced colour decode costs the same as grey here, and the check needs colour
    decoded = decode_image(path, 6 * cfg.hash_size, cfg.min_side)
    if decoded.image is None:
        return decoded.status, "", None, None
    square = to_square(decoded.image)
    grey = cv2.cvtColor(square, cv2.COLOR_BGR2GRAY)
    return (
        decoded.status,
        decoded.sha1,
        hash_variants(grey, cfg.hash_size, cfg.crops),
        thumbnail_variants(square, cfg.verify_side, cfg.crops),
    )


def _hash_task(task: tuple[str, HashConfig]) -> Hashed:
    return hash_image(*task)


def _limit_blas() -> None:
    threadpool_limits(1)  # small matrix products: one thread per worker is ~10x faster than many


def hash_files(paths: list[str], cfg: HashConfig) -> Iterator[Hashed]:
    """:func:`hash_image` of every path, in a pool of ``cfg.n_jobs`` processes, yielded in input
    order (the caller stores each result as it comes: no list of per-image arrays held twice)."""
    tasks = [(p, cfg) for p in paths]
    progress = dict(total=len(tasks), desc="image_hash", unit="img", mininterval=2.0)
    if cfg.n_jobs <= 1 or len(tasks) < 2:
        with threadpool_limits(1):
            yield from (_hash_task(t) for t in tqdm(tasks, **progress))
        return
    chunk = max(1, min(256, len(tasks) // (cfg.n_jobs * 8)))
    with process_pool(cfg.n_jobs, initializer=_limit_blas) as pool:
        yield from tqdm(pool.map(_hash_task, tasks, chunksize=chunk), **progress)


def hash_catalog(catalog: pd.DataFrame, cfg: HashConfig) -> pd.DataFrame:
    """Hashes and duplicate groups of every row of ``catalog`` (needs ``row_id``, ``image_path``).

    Returns the :data:`COLUMNS` table in the catalog's row order; ``attrs["timing_s"]`` holds the
    seconds spent hashing and searching, ``attrs["search"]`` the search statistics (read by the
    report and the benchmark).
    """
    row_ids, paths = rows_and_paths(catalog, "catalog")
    start = time.perf_counter()
    variants = np.zeros((len(paths), len(cfg.crops), cfg.nbytes), np.uint8)
    thumbs = np.zeros((len(paths), len(cfg.crops), cfg.verify_side, cfg.verify_side, 3), np.uint8)
    usable = np.zeros(len(paths), bool)
    statuses, sha1 = [], []
    for k, (status, digest, v, t) in enumerate(hash_files(paths, cfg)):
        statuses.append(status)
        sha1.append(digest)
        if v is not None:
            variants[k], thumbs[k], usable[k] = v, t, True
    hashing_s = time.perf_counter() - start
    start = time.perf_counter()
    exact = groups_from_keys(sha1)
    stats: dict = {}
    near = near_duplicate_groups(
        variants,
        usable,
        cfg.radius,
        exact,
        stats=stats,
        thumbs=thumbs,
        max_difference=cfg.max_colour_difference,
        linkage=cfg.linkage,
    )
    search_s = time.perf_counter() - start
    table = pd.DataFrame(
        {
            "row_id": row_ids,
            "sha1": sha1,
            "phash": [variants[k, 0].tobytes().hex() if ok else "" for k, ok in enumerate(usable)],
            "exact_dup_group": exact,
            "near_dup_group": near,
            "decode_status": statuses,
        }
    )
    table.attrs["timing_s"] = {"hashing": hashing_s, "search": search_s}
    table.attrs["search"] = stats
    log.info(
        "%d images hashed in %.1f s (%d without a picture); search %.2f s over %d distinct hashes, "
        "%d candidates verified: %d exact-duplicate groups, %d near-duplicate clusters",
        int(usable.sum()),
        hashing_s,
        int((~usable).sum()),
        search_s,
        stats.get("representatives", 0),
        stats.get("candidates_verified", 0),
        int(exact.max(initial=-1) + 1),
        int(near.max(initial=-1) + 1),
    )
    return table


def hash_report(table: pd.DataFrame) -> dict[str, Any]:
    """``reports/image_hash.json``: row accounting (rows without a hash, by reason) and group counts."""
    hashed = table["phash"].astype(str).str.len().to_numpy() > 0
    exact, near = table["exact_dup_group"].to_numpy(), table["near_dup_group"].to_numpy()
    search = table.attrs.get("search", {})
    return {
        "rows": int(len(table)),
        "hashed": int(hashed.sum()),
        "not_hashed": int((~hashed).sum()),
        "decode_status": {str(k): int(v) for k, v in table["decode_status"].value_counts().sort_index().items()},
        "exact_duplicate_groups": int(exact.max(initial=-1) + 1),
        "exact_duplicate_rows": int((exact >= 0).sum()),
        "near_duplicate_clusters": int(near.max(initial=-1) + 1),
        "near_duplicate_rows": int((near >= 0).sum()),
        # complete linkage keeps a cluster to mutual near duplicates; a large one on new data says
        # look-alikes pass the colour check (lower max_colour_difference): watch this number
        "largest_near_duplicate_cluster": int(np.bincount(near[near >= 0]).max()) if (near >= 0).any() else 0,
        # representatives: distinct hash sets searched (copies of one photo count once)
        "search": {
            k: search[k]
            for k in (
                "representatives",
                "n_chunks",
                "flips_per_chunk",
                "candidates_verified",
                "candidate_pairs",
                "verified_pairs",
            )
            if k in search
        },
    }

"""Benchmark of duplicate handling when many products share one photo (not a test: prints a table).

Real catalogs hold sellers' placeholder pictures: one file on thousands of rows. For each size, a
catalog of ``N`` rows showing one generated 500x500 product photo (written once, then hard-linked
under each row's ``image_<imageid>_product_<productid>.jpg``: same bytes, as a re-upload) plus a
few hundred distinct product photos, in its own process (so peak RSS is per size):

* ``image_hash``: ``hash_catalog`` (``n_jobs`` processes): wall and CPU time per row, the
  near-duplicate search time, distinct hashes searched (``representatives``), candidates verified,
  clusters and the largest one;
* downstream of it on the same rows: the split (``split_catalog`` with the hash table), the
  duplicate policy and the contact sheets;
* peak RSS of the process (``RUSAGE_SELF``) and of its hashing workers (``RUSAGE_CHILDREN``),
  after hashing and after everything.

Before the copies were collapsed to one representative, the search listed every pair of copies:
1,000 copies 11 s / 0.66 GB, 4,000 213 s / 7.4 GB, 10,000 killed at 23 GB. Target: time per row
and peak RSS flat from 1,000 to 50,000 copies. Writes ``reports/bench/duplicates.json``.

    python bench/duplicates.py --sizes 1000 4000 10000 50000 --n-jobs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from measure import cpu_s, peak_rss_mib

from rakuten.contracts.classes import CLASS_CODES
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.data.split import split_catalog
from rakuten.image.contact_sheet import contact_sheets
from rakuten.image.image_hash import HashConfig, hash_catalog, hash_report
from rakuten.image.policy import duplicate_policy

log = logging.getLogger("bench.duplicates")

SIDE = 500
FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def product_photo(seed: int) -> np.ndarray:
    """A 500x500 BGR product shot: white studio background, soft shadow, a shaded box with a label
    and a logo, a little sensor noise (so the JPEG has real texture to encode)."""
    rng = np.random.default_rng(seed)
    image = np.full((SIDE, SIDE, 3), 255, np.uint8)
    w, h = int(rng.integers(160, 330)), int(rng.integers(160, 360))
    x0, y0 = (SIDE - w) // 2 + int(rng.integers(-40, 41)), (SIDE - h) // 2 + int(rng.integers(-30, 31))
    shadow = np.zeros((SIDE, SIDE), np.float32)
    cv2.ellipse(shadow, (x0 + w // 2 + 12, y0 + h + 8), (w // 2 + 20, 18), 0, 0, 360, 1.0, -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 12)
    image = (image * (1 - 0.35 * shadow[..., None])).astype(np.uint8)
    colour = rng.integers(30, 230, 3).astype(np.float32)
    shade = np.linspace(1.15, 0.75, w, dtype=np.float32)[None, :, None]  # lit from the left
    box = np.clip(colour[None, None, :] * shade, 0, 255).astype(np.uint8)
    image[y0 : y0 + h, x0 : x0 + w] = np.broadcast_to(box, (h, w, 3))
    label = tuple(int(c) for c in rng.integers(180, 256, 3))
    cv2.rectangle(image, (x0 + w // 8, y0 + h // 3), (x0 + 7 * w // 8, y0 + 2 * h // 3), label, -1)
    ink = tuple(int(c) for c in rng.integers(0, 90, 3))
    text = "".join(chr(int(c)) for c in rng.integers(65, 91, 6))
    cv2.putText(image, text, (x0 + w // 8 + 6, y0 + h // 2 + 8), cv2.FONT_HERSHEY_DUPLEX, w / 300, ink, 2, cv2.LINE_AA)
    cv2.circle(image, (x0 + w // 2, y0 + h // 6), max(8, w // 12), ink, -1, cv2.LINE_AA)
    noise = rng.normal(0, 3, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def write_images(root: Path, n_copies: int, n_distinct: int) -> pd.DataFrame:
    """The catalog rows: ``n_copies`` hard links of one photo, then ``n_distinct`` other photos
    (files kept between runs; links only added)."""
    folder = root / "images" / "image_train"
    folder.mkdir(parents=True, exist_ok=True)
    shared = folder / "image_1_product_1.jpg"
    if not shared.exists():
        cv2.imwrite(str(shared), product_photo(0), [cv2.IMWRITE_JPEG_QUALITY, 90])
    paths = [shared]
    for k in range(2, n_copies + 1):
        path = folder / f"image_{k}_product_{k}.jpg"
        if not path.exists():
            try:
                os.link(shared, path)
            except OSError:  # no hard links on this file system: a copy has the same bytes
                path.write_bytes(shared.read_bytes())
        paths.append(path)
    for k in range(n_distinct):
        path = folder / f"image_{10_000_000 + k}_product_{10_000_000 + k}.jpg"
        if not path.exists():
            cv2.imwrite(str(path), product_photo(k + 1), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    rng = np.random.default_rng(0)
    n = len(paths)
    return pd.DataFrame(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "designation": [f"produit {k}" for k in range(n)],
            "description": [None] * n,
            "prdtypecode": rng.choice(np.array(CLASS_CODES), n),  # a placeholder spans every class
            "is_official_test": np.zeros(n, bool),
            "image_path": [p.as_posix() for p in paths],
            "image_ok": np.ones(n, bool),
        }
    )


def one_size(n_copies: int, n_distinct: int, root: Path, n_jobs: int) -> dict:
    catalog = write_images(root, n_copies, n_distinct)
    n = len(catalog)
    rss_start = peak_rss_mib()
    cpu, start = cpu_s(), time.perf_counter()
    hashes = hash_catalog(catalog, HashConfig(n_jobs=n_jobs))
    hash_s, hash_cpu = time.perf_counter() - start, cpu_s() - cpu
    rss_hash = peak_rss_mib()
    report = hash_report(hashes)
    near = hashes["near_dup_group"].to_numpy()

    start = time.perf_counter()
    split, _ = split_catalog(catalog, FRACTIONS, seed=42, image_groups=hashes)
    split_s = time.perf_counter() - start
    splits = split.set_index("row_id").loc[catalog["row_id"], "split"].to_numpy()
    blur = np.random.default_rng(1).random(n) * 500
    start = time.perf_counter()
    keep, weight = duplicate_policy(
        near, catalog["prdtypecode"].to_numpy(), splits == "train", blur, np.ones(n, bool), 0.5
    )
    policy_s = time.perf_counter() - start
    table = hashes.assign(
        keep_for_train=keep,
        sample_weight=weight,
        blur_score=blur,
        is_blurry=False,
        red_ratio=0.0,
        is_red_cast=False,
        border_fraction=0.0,
        has_border=False,
        clean_path="",
        actions="",
    )
    start = time.perf_counter()
    contact_sheets(table, catalog["image_path"].tolist(), catalog["prdtypecode"].tolist())
    sheets_s = time.perf_counter() - start
    shared = near[0]
    return {
        "copies": n_copies,
        "distinct": n_distinct,
        "rows": n,
        "n_jobs": n_jobs,
        "hash_catalog_s": round(hash_s, 2),
        "hash_ms_per_row": round(hash_s * 1000 / n, 3),
        "hash_cpu_ms_per_row": round(hash_cpu * 1000 / n, 3),
        "search_s": round(hashes.attrs["timing_s"]["search"], 3),
        "representatives": report["search"].get("representatives"),
        "candidates_verified": report["search"]["candidates_verified"],
        "exact_groups": report["exact_duplicate_groups"],
        "near_clusters": report["near_duplicate_clusters"],
        "largest_cluster": report["largest_near_duplicate_cluster"],
        "copies_in_one_cluster": bool(shared >= 0 and (near[:n_copies] == shared).all()),
        "split_s": round(split_s, 2),
        "policy_s": round(policy_s, 3),
        "contact_sheets_s": round(sheets_s, 2),
        # the shared photo joins its rows into one split group: they all land in one split
        "copies_by_split": {str(k): int(v) for k, v in pd.Series(splits[:n_copies]).value_counts().items()},
        "train_rows_kept_of_copies": int(keep[:n_copies][splits[:n_copies] == "train"].sum()),
        "peak_rss_mib": {"before_hashing": rss_start, "after_hashing": rss_hash, "after_all": peak_rss_mib()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1000, 4000, 10000, 50000],
        help="copies of the shared photo, one run each",
    )
    parser.add_argument("--distinct", type=int, default=300, help="other product photos in every catalog")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/rakuten_bench_duplicates"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/duplicates.json"))
    args = parser.parse_args()
    setup_logging("WARNING")
    if args.one:
        print(json.dumps(one_size(args.one, args.distinct, args.root, args.n_jobs)))
        return
    rows = []
    for n in args.sizes:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--distinct",
                str(args.distinct),
                "--n-jobs",
                str(args.n_jobs),
                "--root",
                str(args.root),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"{n} copies: run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        rss = r["peak_rss_mib"]["after_all"]
        print(
            f"{r['copies']:>6} copies + {r['distinct']} distinct: hash_catalog {r['hash_catalog_s']:>6.1f} s "
            f"({r['hash_ms_per_row']:.2f} ms/row, CPU {r['hash_cpu_ms_per_row']:.2f} ms/row)  "
            f"search {r['search_s']:.3f} s over {r['representatives']} distinct, "
            f"{r['candidates_verified']} candidates  {r['near_clusters']} clusters (largest {r['largest_cluster']})  "
            f"split {r['split_s']:.1f} s  policy {r['policy_s']:.3f} s  sheets {r['contact_sheets_s']:.2f} s  "
            f"peak RSS {rss['self']:.0f} MiB (workers {rss['children']:.0f})",
            flush=True,
        )
    write_json({"machine_cpus": os.cpu_count(), "image_size": SIDE, "results": rows}, args.out)


if __name__ == "__main__":
    main()

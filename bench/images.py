"""Benchmark of the image stages on generated 500x500 JPEG catalogs (not a test: prints a table).

For each size, on the same files and with the same number of processes:
* decode-only rate: full-size ``cv2.imdecode`` of every file (the reference);
* ``image_hash``: ``hash_catalog`` (colour reduced decode, SHA-1, five pHashes and colour thumbnails
  per image) and, in it, the near-duplicate search time (candidate search, colour check of the
  candidate pairs, complete-linkage clusters; target: linear growth, <= 60 s at 84,916), the
  candidate and verified pairs and the largest cluster;
* ``image_clean``: ``clean_frame`` given the hashes (decode, measure, correct, write), its rate and
  ratio to decode-only (target >= 0.5), and the ratio of both stages together;
* every detector's precision and recall against the catalog's planted ground truth;
* peak RSS (main process and workers). Each size runs in its own process so peak RSS is per size.
Writes ``reports/bench/images.json``.

    python bench/images.py --sizes 10000 40000 84916 --n-jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from measure import cpu_s, peak_rss_mib, run_in_own_process

from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.data.ingest import load_catalog
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.generate import write_sample
from rakuten.image.config import ImageCleanConfig
from rakuten.image.image_clean import clean_frame
from rakuten.image.image_hash import HashConfig, hash_catalog
from rakuten.image.scoring import load_defects, score_detectors


def _decode(path: str) -> int:
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    return image.shape[0]


def decode_rate(paths: list[str], n_jobs: int) -> float:
    start = time.perf_counter()
    with ProcessPoolExecutor(n_jobs) as pool:
        list(pool.map(_decode, paths, chunksize=64))
    return len(paths) / (time.perf_counter() - start)


def one_size(n: int, root: Path, n_jobs: int) -> dict:
    sample = root / f"catalog_{n}"
    if not (sample / "defects.json").exists():
        write_sample(SampleConfig(n_train=n, n_test=0, image_size=500, seed=1, n_jobs=n_jobs), sample)
    catalog, _ = load_catalog(sample)
    paths = catalog["image_path"].tolist()
    for p in paths:  # warm the page cache: every measurement then reads from memory alike
        Path(p).read_bytes()
    cpu = [cpu_s()]
    decode = decode_rate(paths, n_jobs)
    cpu.append(cpu_s())
    start = time.perf_counter()
    hashes = hash_catalog(catalog, HashConfig(n_jobs=n_jobs))
    hash_s = time.perf_counter() - start
    cpu.append(cpu_s())
    start = time.perf_counter()
    table = clean_frame(catalog, root / f"out_{n}", ImageCleanConfig(n_jobs=n_jobs), hashes=hashes)
    clean_s = time.perf_counter() - start
    cpu.append(cpu_s())
    decode_cpu, hash_cpu, clean_cpu = np.diff(cpu) * 1000 / n
    rss = max(peak_rss_mib().values())  # this process or its largest worker
    scores, _ = score_detectors(table, paths, load_defects(sample / "defects.json"))
    search = hashes.attrs["search"]
    near = hashes["near_dup_group"].to_numpy()
    return {
        "n_images": n,
        "n_jobs": n_jobs,
        "decode_only_images_per_s": round(decode, 1),
        "hash_images_per_s": round(n / hash_s, 1),
        "clean_images_per_s": round(n / clean_s, 1),
        "ratio": round(n / clean_s / decode, 3),
        "ratio_hash_and_clean": round(n / (hash_s + clean_s) / decode, 3),
        "cpu_ms_per_image": {
            "decode_only": round(decode_cpu, 2),
            "hash": round(hash_cpu, 2),
            "clean": round(clean_cpu, 2),
        },
        "cpu_ratio": round(decode_cpu / clean_cpu, 3),
        "cpu_ratio_hash_and_clean": round(decode_cpu / (hash_cpu + clean_cpu), 3),
        "duplicate_search_s": round(hashes.attrs["timing_s"]["search"], 2),
        "search_chunks": search["n_chunks"],
        "search_candidates": search["candidates_verified"],
        "candidate_pairs": search["candidate_pairs"],
        "verified_pairs": search["verified_pairs"],
        "largest_near_duplicate_cluster": int(np.bincount(near[near >= 0]).max()) if (near >= 0).any() else 0,
        "hash_total_s": round(hash_s, 1),
        "clean_total_s": round(clean_s, 1),
        "peak_rss_mib": rss,
        "detection": {k: {m: round(scores[k][m], 3) for m in ("precision", "recall")} for k in scores},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000, 84916])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/rakuten_bench_images"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/images.json"))
    parser.add_argument("--machine", default=f"{os.cpu_count()}-core {platform.machine()}", help="recorded as is")
    args = parser.parse_args()
    setup_logging("WARNING")
    if args.one:
        print(json.dumps(one_size(args.one, args.root, args.n_jobs)))
        return
    rows = []
    for n in args.sizes:
        rows.append(
            run_in_own_process(
                [__file__, "--one", str(n), "--n-jobs", str(args.n_jobs), "--root", str(args.root)], show_progress=False
            )
        )
        r = rows[-1]
        print(
            f"{r['n_images']:>7} images: decode-only {r['decode_only_images_per_s']:>7.1f}/s  "
            f"hash {r['hash_images_per_s']:>7.1f}/s  clean {r['clean_images_per_s']:>7.1f}/s  "
            f"ratio {r['ratio']:.2f} (hash+clean {r['ratio_hash_and_clean']:.2f}; "
            f"CPU-time ratio {r['cpu_ratio']:.2f}, {r['cpu_ratio_hash_and_clean']:.2f})  "
            f"dup search {r['duplicate_search_s']:>6.2f} s ({r['search_candidates']} candidates)  "
            f"near P/R {r['detection']['near_duplicates']['precision']:.3f}/"
            f"{r['detection']['near_duplicates']['recall']:.3f} "
            f"(largest cluster {r['largest_near_duplicate_cluster']})  "
            f"blur {r['detection']['blur']['precision']:.3f}/{r['detection']['blur']['recall']:.3f}  "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    write_json(
        {
            "machine": args.machine,
            "machine_cpus": os.cpu_count(),
            "image_size": 500,
            "command": " ".join(
                ["python bench/images.py", "--sizes", *map(str, args.sizes), "--n-jobs", str(args.n_jobs)]
            ),
            "results": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()

"""Benchmark of the synthetic catalog generator at full size (not a test: prints a table).

The generator (``rakuten.data.sample.generate.write_sample``) must write the full-size catalog (84,916 +
13,812 rows, 98,728 JPEGs of 500 px) on a 2-core machine in minutes: >= 200 images/s overall,
<= 8 minutes. For each size (total rows, split train/test in the official 84916:13812 ratio), in
its own process (so peak RSS is per size):

* ``write_sample`` with ``n_jobs`` workers: wall and CPU time, images/s, and where the wall time
  goes (``generate_tables``: texts, plan, ids; ``render_all``: the images; the rest: CSVs and
  ``defects.json``);
* the single-process cost of one image (``render_row`` on the catalog's first rows, one OpenCV
  thread), the figure the worker count divides;
* peak RSS of the process (``RUSAGE_SELF``) and of its largest worker (``RUSAGE_CHILDREN``);
* the catalog on disk: file count, bytes (apparent size) and allocated bytes.

The catalog is deleted after each size unless ``--keep``. Before the noise bank, integer pixel ops
and workers writing their own files, one 500 px image cost 24.3 ms on one core, the tables 40 s
at full size (a quadratic duplicate-source search), the workers piped every JPEG to the parent,
and 10,000 rows took 115 s with 2 jobs (87 images/s; the full size would have taken ~20 minutes).
Writes ``reports/bench/generator.json``.

    python bench/generator.py --sizes 10000 98728 --n-jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import cv2
from measure import cpu_s, peak_rss_mib, run_in_own_process

import rakuten  # noqa: F401  first, as in the stage: pins numpy's and OpenCV's code paths before they load
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.data.sample import generate
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.generate import write_sample
from rakuten.data.sample.render import image_tasks, render_row
from rakuten.data.sample.tables import generate_tables

FULL_TRAIN, FULL_TEST = 84916, 13812
PER_IMAGE_ROWS = 300  # rows rendered in-process for the single-core cost of one image


def split_size(total: int) -> tuple[int, int]:
    """``(n_train, n_test)`` for ``total`` rows in the official ratio (98,728 -> 84,916 + 13,812)."""
    n_test = round(total * FULL_TEST / (FULL_TRAIN + FULL_TEST))
    return total - n_test, n_test


def disk_usage(root: Path) -> dict[str, int]:
    files, size, allocated = 0, 0, 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(dirpath, name))
            files += 1
            size += info.st_size
            allocated += info.st_blocks * 512
    return {"files": files, "bytes": size, "allocated_bytes": allocated}


def timed(fn, spent: dict[str, float], key: str):
    """``fn`` wrapped to add its wall time to ``spent[key]`` (``write_sample`` looks its phases up in
    :mod:`rakuten.data.sample.generate` at each call, so the wrapped ones are timed there)."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def per_image_ms(cfg: SampleConfig) -> float:
    """Single-process ms per image on the catalog's first rows (noise bank built beforehand)."""
    _, labels, _, _, defect, source, _ = generate_tables(cfg)
    tasks = image_tasks(cfg, labels, defect, source)[:PER_IMAGE_ROWS]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    render_row(tasks[0])
    start = time.perf_counter()
    for task in tasks:
        render_row(task)
    cv2.setNumThreads(threads)
    return (time.perf_counter() - start) * 1000 / len(tasks)


def one_size(total: int, image_size: int, n_jobs: int, root: Path, keep: bool) -> dict:
    n_train, n_test = split_size(total)
    cfg = SampleConfig(n_train=n_train, n_test=n_test, image_size=image_size, n_jobs=n_jobs)
    out = root / f"catalog_{total}"
    if out.exists():
        shutil.rmtree(out)
    spent: dict[str, float] = {}
    generate.generate_tables = timed(generate.generate_tables, spent, "generate_tables")
    generate.render_all = timed(generate.render_all, spent, "render_all")
    load = os.getloadavg()[0]
    cpu, start = cpu_s(), time.perf_counter()
    write_sample(cfg, out)
    wall, cpu = time.perf_counter() - start, cpu_s() - cpu
    rss = peak_rss_mib()
    disk = disk_usage(out)
    if not keep:
        shutil.rmtree(out)
    images = n_train + n_test
    return {
        "rows": images,
        "n_train": n_train,
        "n_test": n_test,
        "image_size": image_size,
        "n_jobs": n_jobs,
        "wall_s": round(wall, 1),
        "images_per_s": round(images / wall, 1),
        "cpu_s": round(cpu, 1),
        "generate_tables_s": round(spent["generate_tables"], 2),
        "render_all_s": round(spent["render_all"], 1),
        "other_s": round(wall - spent["generate_tables"] - spent["render_all"], 2),
        "render_ms_per_image_1_process": round(per_image_ms(cfg), 2),
        "peak_rss_mib": rss,
        "disk": disk,
        "load_avg_1m_before": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10000, FULL_TRAIN + FULL_TEST],
        help="total rows (train + test in the official ratio), one run each",
    )
    parser.add_argument("--image-size", type=int, default=500)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/rakuten_bench_generator"))
    parser.add_argument("--keep", action="store_true", help="keep the generated catalogs under --root")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/generator.json"))
    args = parser.parse_args()
    setup_logging("WARNING")
    if args.one:
        print(json.dumps(one_size(args.one, args.image_size, args.n_jobs, args.root, args.keep)))
        return
    rows = []
    for n in args.sizes:
        rows.append(
            run_in_own_process(
                [
                    __file__,
                    "--one",
                    str(n),
                    "--image-size",
                    str(args.image_size),
                    "--n-jobs",
                    str(args.n_jobs),
                    "--root",
                    str(args.root),
                ]
                + ["--keep"] * args.keep
            )
        )
        r = rows[-1]
        print(
            f"{r['rows']:>6} images ({r['n_train']} + {r['n_test']}, {r['image_size']} px, {r['n_jobs']} jobs): "
            f"{r['images_per_s']:>6.1f} images/s  wall {r['wall_s']:>6.1f} s (tables {r['generate_tables_s']:.1f}, "
            f"images {r['render_all_s']:.1f}, rest {r['other_s']:.1f})  CPU {r['cpu_s']:.0f} s  "
            f"1 process {r['render_ms_per_image_1_process']:.2f} ms/image  "
            f"peak RSS {r['peak_rss_mib']['self']:.0f} MiB (workers {r['peak_rss_mib']['children']:.0f})  "
            f"disk {r['disk']['allocated_bytes'] / 2**30:.2f} GiB in {r['disk']['files']} files "
            f"(load {r['load_avg_1m_before']:.1f} before)",
            flush=True,
        )
    if not args.keep and args.root.is_dir() and not any(args.root.iterdir()):
        args.root.rmdir()
    write_json({"machine_cpus": os.cpu_count(), "results": rows}, args.out)


if __name__ == "__main__":
    main()

"""``rakuten predict --engine ray``: the same input scored in one process and on a local Ray cluster with
1 and 2 workers (not a test: prints a table).

Input: the default sample's official test CSV (``data/sample/X_test_update.csv`` and its images), repeated
``--tile`` times under new indices for a longer run (each ``--tile`` given is one input size); models: the
default pipeline's ``models/``. Per input size:

* ``process``: ``rakuten predict``'s own path in this process (``--workers 1``), the reference bytes;
* ``ray xN``: ``predict_distributed`` on a Ray instance started here (``--address local``, N one-CPU
  actors, ``--chunk-rows`` rows per batch): the cluster's start, then the run (actors start, load the
  models, score), as wall seconds and rows/s, and the peak RSS of this process with all its descendants
  (the Ray processes and actors) sampled every 0.2 s.

Every output's SHA-256 must equal the reference (``identical``). With two or more input sizes, the steady
rate of each engine and width: the rows added between the smallest and the largest input over the seconds
they added (start-up and model loading cancel out). Timings on a shared 2-core machine are
noisy: the report records the load average before and after. Writes ``reports/bench/distributed_predict.json``.

    python bench/distributed_predict.py                     # the sample's 800 rows
    python bench/distributed_predict.py --tile 1 --tile 4   # and 3,200 rows
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from measure import markdown_table

import rakuten  # noqa: F401  first: pins numpy's and the libraries' code paths before they load
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.core.params import load_params
from rakuten.serving.distributed import ClusterOptions, predict_distributed
from rakuten.serving.predict import Predictor, read_rows
from rakuten.serving.predict_options import StreamConfig
from rakuten.serving.stream import predict_file

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss_mib() -> float:
    """RSS of this process and every descendant (Ray's processes and actors included), MiB."""
    parent, rss = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
            rss[int(stat.parent.name)] = int(fields[21]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return sum(rss.get(pid, 0) for pid in mine) / 2**20


class PeakRss:
    """The largest :func:`tree_rss_mib` seen while the ``with`` block runs."""

    def __enter__(self) -> "PeakRss":
        self.peak, self._stop = tree_rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def tiled_input(tile: int, workdir: Path) -> Path:
    """The sample's X_test rows ``tile`` times, each copy under new index values (the images are shared)."""
    source = ROOT / "data/sample/X_test_update.csv"
    if tile == 1:
        return source
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    out = [header]
    for copy in range(tile):
        for line in rows:  # the index is the first field: shift it past the previous copies
            index, rest = line.split(",", 1)
            out.append(f"{int(index) + copy * 10_000_000},{rest}")
    path = workdir / f"X_test_x{tile}.csv"
    path.write_text("".join(out), encoding="utf-8")
    return path


def run_process(x_csv: Path, images: Path, models: Path, out: Path, chunk: int) -> dict:
    params_path = ROOT / "params.yaml"
    start = time.perf_counter()
    with PeakRss() as rss, tempfile.TemporaryDirectory(prefix="rakuten-bench-") as work:
        rows = read_rows(x_csv, images)
        predictor = Predictor.load(models, load_params(params_path), str(params_path))
        done = predict_file(predictor, rows, out, Path(work), StreamConfig(chunk_rows=chunk, workers=1))
    wall = time.perf_counter() - start
    return {
        "engine": "process",
        "workers": 1,
        "rows": done.rows,
        "cluster_start_s": 0.0,
        "run_s": round(wall, 1),
        "peak_tree_rss_mib": round(rss.peak),
    }


def run_ray(x_csv: Path, images: Path, models: Path, out: Path, chunk: int, workers: int) -> dict:
    import ray

    params_path = ROOT / "params.yaml"
    with PeakRss() as rss, tempfile.TemporaryDirectory(prefix="ray-", ignore_cleanup_errors=True) as session:
        start = time.perf_counter()  # started here (not by predict_distributed) to time the start on its own
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING", _temp_dir=session)
        started = time.perf_counter()
        try:
            options = ClusterOptions(workers=workers, batch_rows=chunk)
            done = predict_distributed(x_csv, images, out, models, load_params(params_path), str(params_path), options)
        finally:
            ray.shutdown()
        end = time.perf_counter()
    return {
        "engine": "ray",
        "workers": workers,
        "rows": done.rows,
        "cluster_start_s": round(started - start, 1),
        "run_s": round(end - started, 1),
        "peak_tree_rss_mib": round(rss.peak),
    }


def finish(result: dict, out: Path) -> dict:
    result["wall_s"] = round(result["cluster_start_s"] + result["run_s"], 1)
    result["rows_per_s"] = round(result["rows"] / result["wall_s"], 1)
    result["rows_per_s_after_start"] = round(result["rows"] / result["run_s"], 1)
    result["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    return result


def steady_rates(results: list[dict]) -> dict[str, float]:
    """Per engine and width, the rows/s of the rows added between the smallest and the largest input: the
    rate once started and loaded, which a catalog of millions of rows runs at."""
    rates = {}
    for key in sorted({(r["engine"], r["workers"]) for r in results}):
        runs = sorted((r for r in results if (r["engine"], r["workers"]) == key), key=lambda r: r["rows"])
        if len(runs) > 1 and runs[-1]["run_s"] > runs[0]["run_s"]:
            rows, seconds = runs[-1]["rows"] - runs[0]["rows"], runs[-1]["run_s"] - runs[0]["run_s"]
            rates[f"{key[0]} x{key[1]}"] = round(rows / seconds, 1)
    return rates


def table(results: list[dict]) -> str:
    header = ["rows", "engine", "workers", "cluster start s", "run s", "wall s", "rows/s", "rows/s after start"]
    keys = ["engine", "workers", "cluster_start_s", "run_s", "wall_s", "rows_per_s", "rows_per_s_after_start"]
    rows = [[f"{r['rows']:,}"] + [r[k] for k in keys] + [r["peak_tree_rss_mib"]] for r in results]
    return "\n".join(markdown_table(header + ["peak RSS MiB"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, action="append", default=None, help="input copies (repeatable)")
    parser.add_argument("--chunk-rows", type=int, default=100, help="rows per batch (default: 100)")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rakuten_bench_distributed_predict"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench/distributed_predict.json")
    args = parser.parse_args()
    setup_logging()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = ROOT / "data/sample/images/image_test"
    load_before, results = os.getloadavg(), []
    for tile in args.tile or [1]:
        x_csv = tiled_input(tile, args.workdir)
        out = args.workdir / f"process_x{tile}.csv"
        results.append(finish(run_process(x_csv, images, args.models, out, args.chunk_rows), out))
        for workers in (1, 2):
            out = args.workdir / f"ray{workers}_x{tile}.csv"
            results.append(finish(run_ray(x_csv, images, args.models, out, args.chunk_rows, workers), out))
    report = {
        "command": "python bench/distributed_predict.py "
        + " ".join(f"--tile {t}" for t in args.tile or [])
        + f" --chunk-rows {args.chunk_rows}",
        "machine": f"{os.cpu_count()}-core {platform.machine()}",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "models": "the default pipeline's models/ (trained on the default sample)",
        "input": "data/sample/X_test_update.csv and its images, repeated --tile times",
        "identical": all(
            r["sha256"] == next(p["sha256"] for p in results if p["engine"] == "process" and p["rows"] == r["rows"])
            for r in results
        ),
        "steady_rows_per_s": steady_rates(results),
        "runs": results,
    }
    write_json(report, args.out)
    print(table(results))
    print(json.dumps({"identical": report["identical"], "steady_rows_per_s": report["steady_rows_per_s"]}))


if __name__ == "__main__":
    main()

"""Catalog-scale ``rakuten predict``: rows/s and where the time goes, per step (not a test: prints a table).

Generates an official-layout test file with the project's generator (``--rows`` products, 500 px JPEGs as
in the real catalog; 13,812 = the real X_test), then scores it with the trained models under ``--models``
(default: the default pipeline's ``models/``) once per ``--config`` ``WORKERSxCHUNK``:

* wall seconds and rows/s of the whole command's work (reading the CSV, loading the models, scoring,
  writing the CSV), and of the scoring alone;
* per step, in one process (``1xN`` configs): seconds and the step's own rows/s (text cleaning, image
  cleaning, each encoder's single pass, each other model, fusion), so the step that bounds the whole shows;
* peak RSS of this process and of the largest worker;
* the SHA-256 of every output CSV: all configs must give the same bytes (``identical``).

Writes ``reports/bench/predict.json``.

    python bench/predict.py                       # 13,812 rows, configs 1x1024 and 2x1024
    python bench/predict.py --rows 100000 --config 2x2048
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path

from measure import cpu_s, markdown_table, peak_rss_mib

import rakuten  # noqa: F401  first, as in the stage: pins numpy's and the libraries' code paths before they load
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.core.params import load_params
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.generate import write_sample
from rakuten.serving.predict import Predictor, read_rows
from rakuten.serving.predict_options import StreamConfig
from rakuten.serving.stream import predict_file

ROOT = Path(__file__).resolve().parents[1]


def make_input(rows: int, workdir: Path) -> tuple[Path, Path]:
    """The generated X_test CSV and image folder of ``rows`` products (kept in ``workdir`` for reruns)."""
    sample = workdir / f"sample_{rows}"
    if not (sample / "X_test_update.csv").is_file():
        shutil.rmtree(sample, ignore_errors=True)
        write_sample(SampleConfig(n_train=54, n_test=rows, image_size=500, label_noise=0.0), sample)
    return sample / "X_test_update.csv", sample / "images" / "image_test"


def run(config: str, x_csv: Path, images: Path, models: Path, out: Path) -> dict:
    """One scoring of the file with ``WORKERSxCHUNK``; the per-step profile when it runs in this process."""
    workers, chunk = (int(v) for v in config.split("x"))
    cfg = StreamConfig(chunk_rows=chunk, workers=workers)
    params_path = ROOT / "params.yaml"
    params = load_params(params_path)
    start, cpu0 = time.perf_counter(), cpu_s()
    rows = read_rows(x_csv, images)
    read_s = time.perf_counter() - start
    predictor = Predictor.load(models, params, str(params_path)) if workers == 1 else None
    load_s = time.perf_counter() - start - read_s
    work = out.parent / f"work_{config}"
    done = predict_file(predictor, rows, out, work, cfg, (models, params, str(params_path), None))
    wall = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "workers": workers,
        "chunk_rows": chunk,
        "rows": done.rows,
        "wall_s": round(wall, 1),
        "rows_per_s": round(done.rows / wall, 1),
        "read_s": round(read_s, 1),
        "load_s": round(load_s, 1),
        "scoring_s": round(done.seconds["predict"], 1),
        "scoring_rows_per_s": round(done.rows / done.seconds["predict"], 1),
        "cpu_s": round(cpu_s() - cpu0, 1),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    if predictor is not None:
        times = predictor.models.times
        result["steps"] = {
            step: {"s": round(s, 1), "rows_per_s": round(done.rows / s, 1) if s else None, "share": round(s / wall, 3)}
            for step, s in sorted(times.items(), key=lambda kv: -kv[1])
        }
    return result


def table(results: list[dict]) -> str:
    lines = markdown_table(
        ["workers x chunk", "rows", "wall s", "rows/s", "scoring rows/s", "load s", "CPU s"],
        [
            [f"{r['workers']} x {r['chunk_rows']}", f"{r['rows']:,}", r["wall_s"], r["rows_per_s"]]
            + [r["scoring_rows_per_s"], r["load_s"], r["cpu_s"]]
            for r in results
        ],
    )
    for r in results:
        if "steps" in r:
            steps = [[k, v["s"], v["rows_per_s"], f"{v['share']:.0%}"] for k, v in r["steps"].items()]
            lines += ["", f"steps ({r['workers']} x {r['chunk_rows']}):"]
            lines += markdown_table(["step", "s", "own rows/s", "share of wall"], steps)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=13812)
    parser.add_argument("--config", action="append", default=None, help="WORKERSxCHUNK (repeatable)")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rakuten_bench_predict"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench/predict.json")
    args = parser.parse_args()
    setup_logging()
    args.workdir.mkdir(parents=True, exist_ok=True)
    x_csv, images = make_input(args.rows, args.workdir)
    results = [
        run(c, x_csv, images, args.models, args.workdir / f"pred_{c}.csv") for c in args.config or ["1x1024", "2x1024"]
    ]
    report = {
        "command": "python bench/predict.py --rows %d %s"
        % (args.rows, " ".join(f"--config {c}" for c in args.config or [])),
        "machine": f"{os.cpu_count()}-core {platform.machine()}",
        "models": "the default pipeline's models/ (trained on the default sample)",
        "input": f"generated official-layout X_test, {args.rows:,} rows, 500 px JPEGs",
        "stream_defaults": dataclasses.asdict(StreamConfig()),
        "identical": len({r["sha256"] for r in results}) == 1,
        "peak_rss_mib": peak_rss_mib(),
        "runs": results,
    }
    write_json(report, args.out)
    print(table(results))
    print(json.dumps({"identical": report["identical"], "peak_rss_mib": report["peak_rss_mib"]}))


if __name__ == "__main__":
    main()

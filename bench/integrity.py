"""Benchmark of artifact verification: what checking hashes costs at load time and at `dvc pull`.

1. Load time: every `models/<name>/` folder of the committed run hashed and checked against dvc.lock
   (:mod:`rakuten.core.integrity`, what `rakuten predict`, `rakuten serve` and the stages do before loading),
   per folder and in all, with the MD5 throughput.
2. `dvc pull`: the committed run pushed to a scratch local-directory remote, then pulled into two empty
   clones, with the remote's `verify` off (DVC's default) and on (the project's committed setting).

Works on the outputs of the last `dvc repro` in this repository (their cache must be here). Prints a
table and writes reports/bench/integrity.json.

    python bench/integrity.py
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from remote import ROOT, clone, dvc, folder_size

from rakuten.core.integrity import ArtifactRecords
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging

LOG = logging.getLogger("rakuten")


def load_time(repeats: int = 3) -> list[dict]:
    """Seconds to verify each model folder (best of ``repeats``, files in the page cache)."""
    records = ArtifactRecords.from_lock(ROOT / "dvc.lock")
    rows = []
    for folder in sorted((ROOT / "models").iterdir()):
        if records.recorded(folder) is None:
            continue
        best = float("inf")
        for _ in range(repeats):
            fresh = ArtifactRecords.from_lock(ROOT / "dvc.lock")  # no memo of an earlier check
            start = time.perf_counter()
            fresh.verify(folder)
            best = min(best, time.perf_counter() - start)
        files, size = folder_size(folder)
        rows.append(
            {
                "model": folder.name,
                "files": files,
                "mib": round(size / 2**20, 2),
                "verify_s": round(best, 4),
                "mib_per_s": round(size / 2**20 / best, 1),
            }
        )
        LOG.info("%-10s %3d files %8.2f MiB  verified in %.3f s", folder.name, files, size / 2**20, best)
    return rows


def pull_cost(scratch: Path) -> list[dict]:
    store = scratch / "store"
    remote = [["add", "-d", "--local", "bench", str(store)]]
    a = clone(scratch, "a", remote, cache=ROOT / ".dvc" / "cache")
    dvc("push", "-r", "bench", cwd=a)
    rows = []
    for verify in ("false", "true"):
        b = clone(scratch, f"b-{verify}", [*remote, ["modify", "--local", "bench", "verify", verify]])
        seconds = dvc("pull", "-r", "bench", cwd=b)
        files, size = folder_size(b / ".dvc" / "cache")
        rows.append(
            {"verify": verify == "true", "pull_s": round(seconds, 1), "files": files, "mib": round(size / 2**20, 1)}
        )
        LOG.info("dvc pull, verify %-5s %6.1f s  %5d files  %7.1f MiB", verify, seconds, files, size / 2**20)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench/integrity.json")
    args = parser.parse_args()
    setup_logging()
    models = load_time()
    with tempfile.TemporaryDirectory(prefix="rakuten-integrity-bench-") as tmp:
        pulls = pull_cost(Path(tmp))
    total = sum(row["verify_s"] for row in models)
    LOG.info("all models: %.3f s for %.1f MiB", total, sum(row["mib"] for row in models))
    write_json(
        {
            "what": "verification of the committed default run's artifacts (dvc.lock at HEAD)",
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_time": {"models": models, "total_s": round(total, 3)},
            "dvc_pull": pulls,
        },
        args.out,
    )


if __name__ == "__main__":
    main()

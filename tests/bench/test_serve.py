"""bench/serve.py, briefly: the load test drives `rakuten serve` on the tiny built repository's models
with every request kind, counts no error, reports ordered percentiles and stops the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_serve_quick_run(tiny_built_repo, tmp_path):
    out = tmp_path / "serve.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "serve.py"),
            "--models",
            str(tiny_built_repo / "models"),
            "--data",
            str(tiny_built_repo),
            "--lock",
            str(tiny_built_repo / "dvc.lock"),
            "--seconds",
            "2",
            "--clients",
            "2",
            "--settle-s",
            "0.5",
            "--output",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())

    assert report["passed"] and report["failed_checks"] == []
    assert report["overall"]["errors"] == 0 and report["overall"]["count"] > 0
    assert set(report["kinds"]) == {"text", "image", "explain", "batch"}
    for kind, k in [*report["kinds"].items(), ("overall", report["overall"])]:
        assert k["errors"] == 0, kind
        assert k["count"] >= 1, kind
        assert 0 < k["p50_ms"] <= k["p95_ms"] <= k["p99_ms"] <= k["max_ms"], kind
    batch = report["kinds"]["batch"]
    assert batch["rows"] == 20 * batch["count"] and batch["rows_per_s"] > 0
    assert sum(report["kinds"]["image"]["inputs_used"].values()) == report["kinds"]["image"]["count"]

    rss = report["rss_mb"]
    assert 0 < rss["start"] <= rss["peak"] and rss["end"] <= rss["peak"] and rss["passed"] is True
    assert report["server_stopped"]["exit_code"] is not None and report["server_stopped"]["killed_or_left"] == []
    assert report["settings"]["clients"] == 2 and report["machine"]["cpu_count"] >= 1 and report["machine"]["torch"]

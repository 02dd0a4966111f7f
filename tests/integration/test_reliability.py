"""Reliability: a stage killed mid-run leaves nothing DVC could take as valid, and the rerun completes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from tests.helpers.stagerun import REPO, default_params, run_stage_script, with_overrides
from tests.helpers.tiny_profile import TINY_PARAMS


def _start_big_sample_stage(tmp_path: Path) -> subprocess.Popen:
    """Start the sample stage on a catalog big enough to be killed while it writes images."""
    params = with_overrides(
        default_params(), {"sample.n_train": 8000, "sample.n_test": 0, "sample.image_size": 96, "sample.n_jobs": 1}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "stages" / "sample.py")],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "data").glob(".sample.*.tmp/images/image_train/*.jpg")):
        time.sleep(0.05)
    time.sleep(0.5)  # mid-way through writing images
    return proc


def test_sigterm_unwinds_and_removes_the_temporary_output(tmp_path):
    proc = _start_big_sample_stage(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == "error: interrupted; no partial output was kept"
    assert not list((tmp_path / "data").iterdir())


def test_killed_sample_stage_leaves_no_partial_output(tmp_path):
    proc = _start_big_sample_stage(tmp_path)
    data = tmp_path / "data"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (data / "sample").exists(), "a killed run must not leave data/sample behind"
    assert list(data.glob(".sample.*.tmp")), "the test should have killed the stage while it was writing"
    result = run_stage_script(
        "sample", tmp_path, {"sample.n_train": 60, "sample.n_test": 6, "sample.image_size": 32, "sample.n_jobs": 1}
    )
    assert result.returncode == 0, result.stderr
    assert (data / "sample" / "defects.json").is_file()
    assert not list(data.glob(".sample.*.tmp")), "the rerun removes the killed run's temporary directory"


def _image_file(raw: Path, frame: pd.DataFrame, i: int) -> Path:
    return raw / "images" / "image_train" / f"image_{frame.iloc[i]['imageid']}_product_{frame.iloc[i]['productid']}.jpg"


def test_unusual_images_are_converted_or_counted_through_the_stages(tiny_sample, tmp_path):
    """Grayscale, CMYK, RGBA (a PNG behind .jpg), 1x1 and truncated JPEGs: the graph runs with
    data.source=raw, every row is kept, and each case is counted in the image reports."""
    raw = tmp_path / "raw"
    shutil.copytree(tiny_sample, raw)
    x = pd.read_csv(raw / "X_train_update.csv", index_col=0)
    rgb = Image.new("RGB", (64, 64), (200, 30, 30))
    cases = {
        0: lambda p: rgb.convert("L").save(p, "JPEG"),
        1: lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        2: lambda p: rgb.convert("RGBA").save(p, "PNG"),
        3: lambda p: Image.new("RGB", (1, 1)).save(p, "JPEG"),
        4: lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    }
    for i, write in cases.items():
        write(_image_file(raw, x, i))
    work = tmp_path / "work"
    overrides = {**TINY_PARAMS, "data.source": "raw", "data.raw_dir": str(raw)}
    for stage in ("ingest", "image_hash", "split", "image_clean"):
        result = run_stage_script(stage, work, overrides)
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
    quality = pd.read_parquet(work / "data" / "processed" / "image_quality.parquet")
    assert len(quality) == 600 and quality["row_id"].is_unique
    report = json.loads((work / "reports" / "image_quality.json").read_text())
    statuses = report["decode_status"]
    assert statuses.get("converted_L") == 1 and statuses.get("converted_CMYK") == 1
    assert statuses.get("converted_RGBA") == 1
    assert statuses.get("truncated") == 1 and sum(statuses.values()) == 600
    assert report["placeholders"] == 1  # the 1x1 image: unusable, grey placeholder, readable=false
    assert report["readable"] == 599
    assert not quality.loc[quality["row_id"] == 3, "readable"].item()
    assert (work / "data" / "processed" / "images" / "3.jpg").is_file()

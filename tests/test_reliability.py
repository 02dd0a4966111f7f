"""Reliability: a stage killed mid-run leaves nothing DVC could take as valid, and the rerun completes."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.stagerun import REPO, default_params, run_stage_script, with_overrides


def _start_big_sample_stage(tmp_path: Path) -> subprocess.Popen:
    """Start the sample stage on a catalog big enough to be killed while it writes images."""
    params = with_overrides(default_params(), {"sample.n_train": 8000, "sample.n_test": 0,
                                               "sample.image_size": 96, "sample.n_jobs": 1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / "sample.py")], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    result = run_stage_script("sample", tmp_path, {"sample.n_train": 60, "sample.n_test": 6,
                                                   "sample.image_size": 32, "sample.n_jobs": 1})
    assert result.returncode == 0, result.stderr
    assert (data / "sample" / "defects.json").is_file()
    assert not list(data.glob(".sample.*.tmp")), "the rerun removes the killed run's temporary directory"

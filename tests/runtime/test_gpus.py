"""One GPU per queue worker (rakuten.runtime.gpus): claims by lock file, shown with real processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rakuten.core.errors import PipelineError
from rakuten.runtime import gpus


@pytest.fixture(autouse=True)
def _release():
    yield
    gpus.release_all()


@pytest.mark.parametrize(
    "value, expected", [("0,1", ["0", "1"]), ("2", ["2"]), (" 3 , 1", ["3", "1"]), ("", []), ("-1", [])]
)
def test_visible_gpus_follow_cuda_visible_devices(value, expected):
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": value}) == expected


def test_no_driver_means_no_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpus.visible_gpus() == []
    assert gpus.pin_free_gpus("auto") == []


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rakuten.runtime import gpus
    env = {"CUDA_VISIBLE_DEVICES": sys.argv[1], "RAKUTEN_GPU_LOCKS": sys.argv[2]}
    held = gpus.pin_free_gpus("auto", int(sys.argv[3]), env)
    print(env["CUDA_VISIBLE_DEVICES"], flush=True)
    release = Path(sys.argv[4])
    while not release.exists():
        time.sleep(0.05)
""")


def holder(visible: str, locks: Path, count: int, release: Path) -> tuple[subprocess.Popen, str]:
    """A separate process (a queue worker's stage) that claims GPUs and holds them until ``release`` exists."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, visible, str(locks), str(count), str(release)], stdout=subprocess.PIPE, text=True
    )
    return proc, proc.stdout.readline().strip()


def test_two_workers_get_different_gpus_and_a_third_waits_for_one(tmp_path, caplog):
    locks, release = tmp_path / "locks", tmp_path / "release"
    first, got_first = holder("0,1", locks, 1, release)
    second, got_second = holder("0,1", locks, 1, release)
    try:
        assert {got_first, got_second} == {"0", "1"}  # each worker sees only its own GPU
        with pytest.raises(PipelineError, match=r"^no 1 free GPU\(s\) among 0,1 after 0 s"):
            gpus.claim(1, ["0", "1"], locks, poll_seconds=0.05, timeout_seconds=0.2)
    finally:
        release.touch()
        first.wait(10), second.wait(10)
    caplog.set_level(logging.INFO, logger="rakuten")
    env = {"CUDA_VISIBLE_DEVICES": "0,1", gpus.LOCK_DIR_ENV: str(locks)}
    assert gpus.pin_free_gpus("auto", 2, env) == ["0", "1"] and env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_a_run_waits_while_every_gpu_is_held(tmp_path, caplog):
    locks, release = tmp_path / "locks", tmp_path / "release"
    caplog.set_level(logging.INFO, logger="rakuten")
    busy, got = holder("0", locks, 1, release)
    assert got == "0"
    subprocess.Popen(
        [sys.executable, "-c", f"import time, pathlib; time.sleep(1); pathlib.Path({str(release)!r}).touch()"]
    )
    started = time.monotonic()
    assert gpus.claim(1, ["0"], locks, poll_seconds=0.05) == ["0"]
    assert time.monotonic() - started > 0.5  # it waited for the holder to finish
    busy.wait(10)
    assert any("waiting for 1 free GPU(s): GPUs 0 are held by other runs" in r.getMessage() for r in caplog.records)


def test_a_launcher_claims_for_all_its_ranks_and_ranks_claim_nothing(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2", gpus.LOCK_DIR_ENV: str(tmp_path)}
    assert gpus.pin_free_gpus("auto", 2, env) == ["0", "1"] and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    rank = {"CUDA_VISIBLE_DEVICES": "0,1", gpus.LOCK_DIR_ENV: str(tmp_path), "LOCAL_RANK": "1"}
    assert gpus.pin_free_gpus("auto", 1, rank) == [] and rank["CUDA_VISIBLE_DEVICES"] == "0,1"


@pytest.mark.parametrize(
    "env", [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "0", "RAKUTEN_GPU_LOCKS": "off"}]
)
def test_cpu_runs_and_opted_out_runs_claim_nothing(env, tmp_path):
    device = "cpu" if "RAKUTEN_GPU_LOCKS" not in env else "auto"
    assert gpus.pin_free_gpus(device, 1, dict(env)) == []


def test_more_gpus_than_visible_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match=r"^4 GPU\(s\) wanted but 2 visible \(0,1\); lower the stage's processes"):
        gpus.claim(4, ["0", "1"], tmp_path)


def _unwritable_lock_dirs(tmp_path: Path) -> dict[str, Path]:
    """Lock folders a claim cannot use, even as root (who ignores permission bits)."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "lock-is-a-folder").mkdir()
    (tmp_path / "lock-is-a-folder" / "gpu-0.lock").mkdir()  # the lock file cannot be opened
    return {
        "parent is a file": tmp_path / "a-file" / "locks",
        "path is a file": tmp_path / "a-file",
        "lock file is a folder": tmp_path / "lock-is-a-folder",
    }


@pytest.mark.parametrize("case", ["parent is a file", "path is a file", "lock file is a folder"])
def test_an_unusable_lock_folder_is_one_line_naming_it_and_the_variable(tmp_path, case):
    locks = _unwritable_lock_dirs(tmp_path)[case]
    env = {"CUDA_VISIBLE_DEVICES": "0", gpus.LOCK_DIR_ENV: str(locks)}
    with pytest.raises(PipelineError) as caught:
        gpus.pin_free_gpus("auto", 1, env)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"GPU lock folder {locks} cannot be used")
    assert "set RAKUTEN_GPU_LOCKS to a writable folder, or RAKUTEN_GPU_LOCKS=off" in message
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and not gpus._held  # nothing claimed, nothing leaked


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root writes into read-only folders")
def test_a_lock_folder_under_a_read_only_folder_is_one_line(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    try:
        with pytest.raises(PipelineError, match=r"^GPU lock folder .*ro/locks cannot be used \(Permission denied\)"):
            gpus.claim(1, ["0"], tmp_path / "ro" / "locks")
    finally:
        (tmp_path / "ro").chmod(0o700)

"""GPU claims by lock file (rakuten.runtime.gpus), in process (docs/mutation.md).

``flock`` locks belong to an open file description, so a second ``open`` of the same lock file in this
process contends like another process would: the waiting and the order of claims are shown without
subprocesses. The module's ``time`` is replaced (``gpus.time``: the real clock, a sleep that raises), so a
wait is counted instead of slept and a mutant that would wait forever fails at once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from rakuten.core.errors import PipelineError
from rakuten.runtime import gpus

FIX = "set RAKUTEN_GPU_LOCKS to a writable folder, or RAKUTEN_GPU_LOCKS=off to share GPUs without claiming them"


class Slept(Exception):
    pass


class Clock:
    """Stands in for the ``time`` module inside rakuten.runtime.gpus only (subprocess keeps the real one)."""

    def __init__(self):
        self.monotonic = time.monotonic

    @staticmethod
    def sleep(seconds):
        raise Slept(seconds)


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.setattr(gpus, "time", Clock())
    yield
    gpus.release_all()


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def hold(locks: Path, gpu: str) -> int:
    """Another run's claim of ``gpu`` (its own open file description)."""
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"gpu-{gpu}.lock", os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def is_free(locks: Path, gpu: str) -> bool:
    fd = os.open(locks / f"gpu-{gpu}.lock", os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- where and which


def test_the_lock_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(gpus.tempfile, "tempdir", str(tmp_path))
    assert gpus.lock_dir({}) == tmp_path / "rakuten-gpu-locks"
    assert gpus.lock_dir({"RAKUTEN_GPU_LOCKS": ""}) == tmp_path / "rakuten-gpu-locks"
    assert gpus.lock_dir({"RAKUTEN_GPU_LOCKS": "/shared/locks"}) == Path("/shared/locks")
    assert gpus.LOCK_DIR_ENV == "RAKUTEN_GPU_LOCKS"
    monkeypatch.setenv("RAKUTEN_GPU_LOCKS", "/from/env")
    assert gpus.lock_dir() == Path("/from/env")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0,1", ["0", "1"]),
        (" 3 , 1", ["3", "1"]),
        ("", []),
        ("-1", []),
        ("-1,0", []),
        ("GPU-ab,1", ["GPU-ab", "1"]),
        ("0,", ["0", ""]),
    ],
)
def test_cuda_visible_devices_decides_when_set(value, expected, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": value, "OTHER": "1"}) == expected


def fake_smi(tmp_path: Path, body: str) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def test_otherwise_nvidia_smi_lists_the_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    fake_smi(tmp_path, '[ "$*" = "--query-gpu=index --format=csv,noheader" ] || exit 3\nprintf " 0 \\n\\n1\\n  \\n"')
    assert gpus.visible_gpus({}) == ["0", "1"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "7"}) == ["7"]
    fake_smi(tmp_path, "echo 0; exit 9")  # a failing driver: nothing to claim
    assert gpus.visible_gpus({}) == []
    (tmp_path / "nvidia-smi").unlink()
    assert gpus.visible_gpus({}) == []


def test_nvidia_smi_is_given_30_seconds(monkeypatch):
    seen = []

    class Done:
        stdout = "2\n"

    def run(cmd, **kwargs):
        seen.append((cmd, kwargs))
        return Done()

    monkeypatch.setattr(gpus.subprocess, "run", run)
    assert gpus.visible_gpus({}) == ["2"]
    assert seen == [
        (
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            {"capture_output": True, "text": True, "timeout": 30, "check": True},
        )
    ]

    def hung(cmd, **kwargs):
        raise gpus.subprocess.TimeoutExpired(cmd, 30)

    monkeypatch.setattr(gpus.subprocess, "run", hung)
    assert gpus.visible_gpus({}) == []


# --------------------------------------------------------------------------- one lock


def test_try_lock_creates_a_readable_lock_file_and_holds_it(tmp_path):
    mask = os.umask(0o022)
    try:
        fd = gpus._try_lock(tmp_path / "gpu-0.lock")
    finally:
        os.umask(mask)
    assert isinstance(fd, int) and stat.S_IMODE((tmp_path / "gpu-0.lock").stat().st_mode) == 0o644
    assert not is_free(tmp_path, "0")
    os.close(fd)
    assert is_free(tmp_path, "0")


def test_try_lock_on_a_held_or_read_only_lock(tmp_path):
    other = hold(tmp_path, "0")
    before = open_fds()
    assert gpus._try_lock(tmp_path / "gpu-0.lock") is None
    assert open_fds() == before  # its descriptor was closed
    os.close(other)
    (tmp_path / "gpu-0.lock").chmod(0o444)  # another user's lock file: opened read-only
    fd = gpus._try_lock(tmp_path / "gpu-0.lock")
    assert fd is not None
    os.close(fd)


def test_try_lock_raises_other_errors(tmp_path, monkeypatch):
    (tmp_path / "gpu-0.lock").mkdir()
    with pytest.raises(IsADirectoryError):
        gpus._try_lock(tmp_path / "gpu-0.lock")

    def broken(fd, op):
        assert op == fcntl.LOCK_EX | fcntl.LOCK_NB
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(gpus.fcntl, "flock", broken)
    before = open_fds()
    with pytest.raises(OSError) as info:
        gpus._try_lock(tmp_path / "gpu-1.lock")
    assert info.value.errno == errno.ENOLCK and open_fds() == before

    def busy(fd, op):
        raise OSError(errno.EACCES, "Permission denied")  # flock's other "held" errno on some systems

    monkeypatch.setattr(gpus.fcntl, "flock", busy)
    assert gpus._try_lock(tmp_path / "gpu-2.lock") is None and open_fds() == before


def test_release_all_closes_every_claimed_descriptor(tmp_path):
    fds = [os.open(tmp_path / f"f{i}", os.O_RDONLY | os.O_CREAT) for i in range(3)]
    gpus._held.extend(fds)
    gpus.release_all()
    assert gpus._held == []
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    gpus.release_all()


# --------------------------------------------------------------------------- the lock folder


def test_the_lock_folder_is_created_shared_with_the_sticky_bit(tmp_path):
    locks = tmp_path / "a" / "b" / "locks"
    gpus._prepare_lock_dir(locks)
    assert stat.S_IMODE(locks.stat().st_mode) == 0o1777
    locks.chmod(0o700)
    gpus._prepare_lock_dir(locks)  # existing, ours: made shared again
    assert stat.S_IMODE(locks.stat().st_mode) == 0o1777


@pytest.mark.skipif(os.getuid() != 0, reason="needs chown")
def test_a_lock_folder_of_another_user_is_left_as_it_is(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o755)
    locks.chmod(0o755)
    os.chown(locks, 12345, 12345)
    gpus._prepare_lock_dir(locks)
    assert stat.S_IMODE(locks.stat().st_mode) == 0o755


@pytest.mark.parametrize("case, reason", [("file", "it is a file, not a folder"), ("under-file", "Not a directory")])
def test_an_unusable_lock_folder_is_one_line(tmp_path, case, reason):
    (tmp_path / "f").write_text("")
    locks = tmp_path / "f" if case == "file" else tmp_path / "f" / "locks"
    with pytest.raises(PipelineError) as info:
        gpus._prepare_lock_dir(locks)
    assert str(info.value) == f"GPU lock folder {locks} cannot be used ({reason}); {FIX}"
    assert isinstance(info.value.__cause__, NotADirectoryError)  # chained: the traceback keeps the errno
    assert info.value.__cause__.errno == errno.ENOTDIR


def test_the_message_falls_back_to_the_error_text(tmp_path):
    err = gpus._unusable_lock_dir(tmp_path, OSError("odd failure"))
    assert isinstance(err, PipelineError)
    assert str(err) == f"GPU lock folder {tmp_path} cannot be used (odd failure); {FIX}"
    err = gpus._unusable_lock_dir(tmp_path, OSError(errno.EROFS, "Read-only file system"))
    assert str(err) == f"GPU lock folder {tmp_path} cannot be used (Read-only file system); {FIX}"


# --------------------------------------------------------------------------- claim


def test_claim_takes_the_lowest_free_ids_and_keeps_them(tmp_path):
    locks = tmp_path / "locks"
    other = hold(locks, "1")
    assert gpus.claim(2, ["0", "1", "2", "3"], locks) == ["0", "2"]
    assert len(gpus._held) == 2
    assert not is_free(locks, "0") and not is_free(locks, "2") and is_free(locks, "3")
    assert stat.S_IMODE(locks.stat().st_mode) == 0o1777
    assert gpus.claim(1, ["3", "0"], locks) == ["3"] and len(gpus._held) == 3
    gpus.release_all()
    assert is_free(locks, "0") and is_free(locks, "2")
    os.close(other)
    assert gpus.claim(2, ["0", "1"], locks) == ["0", "1"]  # as many as visible


def test_claim_refuses_more_than_visible(tmp_path):
    with pytest.raises(PipelineError) as info:
        gpus.claim(3, ["0", "1"], tmp_path / "locks")
    assert str(info.value) == (
        "3 GPU(s) wanted but 2 visible (0,1); lower the stage's processes or make more "
        "GPUs visible (CUDA_VISIBLE_DEVICES)"
    )
    with pytest.raises(PipelineError, match=r"^1 GPU\(s\) wanted but 0 visible \(none\); "):
        gpus.claim(1, [], tmp_path / "locks")
    assert not (tmp_path / "locks").exists()  # refused before the folder is made


def test_claim_gives_back_what_it_held_when_a_lock_file_cannot_be_opened(tmp_path):
    locks = tmp_path / "locks"
    (locks / "gpu-1.lock").mkdir(parents=True)
    before = open_fds()
    with pytest.raises(PipelineError) as info:
        gpus.claim(2, ["0", "1"], locks)
    assert str(info.value) == f"GPU lock folder {locks} cannot be used (Is a directory); {FIX}"
    assert isinstance(info.value.__cause__, IsADirectoryError)
    assert open_fds() == before and gpus._held == [] and is_free(locks, "0")


def test_claim_with_a_timeout_gives_up_in_one_line(tmp_path):
    locks = tmp_path / "locks"
    other = hold(locks, "1")
    with pytest.raises(PipelineError) as info:
        gpus.claim(2, ["0", "1"], locks, timeout_seconds=0)
    assert str(info.value) == f"no 2 free GPU(s) among 0,1 after 0 s (locks in {locks})"
    assert gpus._held == [] and is_free(locks, "0")  # the one it got is given back
    with pytest.raises(PipelineError, match=r"^no 1 free GPU\(s\) among 1 after -1 s "):
        gpus.claim(1, ["1"], locks, timeout_seconds=-1.4)
    os.close(other)


def test_claim_waits_announcing_it_once_and_polls(tmp_path, monkeypatch, caplog):
    locks = tmp_path / "locks"
    other = [hold(locks, "0")]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 3:  # the other run ends
            os.close(other.pop())

    monkeypatch.setattr(gpus.time, "sleep", sleep)
    caplog.set_level(logging.INFO, logger="rakuten")
    assert gpus.claim(1, ["0"], locks, poll_seconds=0.25) == ["0"]
    assert slept == [0.25, 0.25, 0.25]
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waiting == [f"waiting for 1 free GPU(s): GPUs 0 are held by other runs (locks in {locks})"]
    gpus.release_all()
    other.append(hold(locks, "0"))
    slept.clear()
    assert gpus.claim(1, ["0"], locks, timeout_seconds=60) == ["0"]  # a timeout far away: it still polls
    assert slept == [5.0, 5.0, 5.0]  # every 5 s by default


def test_a_long_wait_ends_at_the_timeout(tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    other = hold(locks, "0")
    clock = [100.0]
    monkeypatch.setattr(gpus.time, "monotonic", lambda: clock[0])
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(gpus.time, "sleep", sleep)
    with pytest.raises(PipelineError, match=r"^no 1 free GPU\(s\) among 0 after 10 s "):
        gpus.claim(1, ["0"], locks, poll_seconds=4, timeout_seconds=10)
    assert slept == [4, 4, 4]  # 12 s > 10 s: gives up
    slept.clear()
    with pytest.raises(PipelineError):
        gpus.claim(1, ["0"], locks, poll_seconds=5, timeout_seconds=10)
    assert slept == [5, 5, 5]  # 10 s is not over 10 s
    os.close(other)


# --------------------------------------------------------------------------- pin_free_gpus


def test_pin_claims_and_narrows_the_visible_gpus(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rakuten")
    env = {"CUDA_VISIBLE_DEVICES": "2,5,7", "RAKUTEN_GPU_LOCKS": str(tmp_path)}
    other = hold(tmp_path, "2")
    assert gpus.pin_free_gpus("cuda", environ=env) == ["5"]
    assert env["CUDA_VISIBLE_DEVICES"] == "5" and not is_free(tmp_path, "5")
    env2 = {"CUDA_VISIBLE_DEVICES": "2,5,7", "RAKUTEN_GPU_LOCKS": str(tmp_path)}
    os.close(other)
    assert gpus.pin_free_gpus("auto", 2, env2) == ["2", "7"] and env2["CUDA_VISIBLE_DEVICES"] == "2,7"


def test_pin_uses_the_process_environment_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    monkeypatch.setenv("RAKUTEN_GPU_LOCKS", str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert gpus.pin_free_gpus("auto") == ["4"] and os.environ["CUDA_VISIBLE_DEVICES"] == "4"
    assert (tmp_path / "gpu-4.lock").exists()


@pytest.mark.parametrize(
    "device, extra",
    [
        ("cpu", {}),
        ("auto", {"LOCAL_RANK": "0"}),
        ("auto", {"RAKUTEN_GPU_LOCKS": "off"}),
        ("auto", {"CUDA_VISIBLE_DEVICES": ""}),
    ],
)
def test_pin_claims_nothing(tmp_path, device, extra, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "RAKUTEN_GPU_LOCKS": str(tmp_path / "locks"), **extra}
    before = dict(env)
    assert gpus.pin_free_gpus(device, 1, env) == []
    assert env == before and not (tmp_path / "locks").exists() and gpus._held == []


def test_pin_without_any_gpu_claims_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    env = {"RAKUTEN_GPU_LOCKS": str(tmp_path / "locks")}
    assert gpus.pin_free_gpus("auto", 1, env) == [] and env == {"RAKUTEN_GPU_LOCKS": str(tmp_path / "locks")}
    assert not (tmp_path / "locks").exists()


def test_pin_announces_the_claim(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rakuten")
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2", "RAKUTEN_GPU_LOCKS": str(tmp_path)}
    gpus.pin_free_gpus("auto", 2, env)
    assert "GPU 0,1 claimed for this run (3 visible)" in [r.getMessage() for r in caplog.records]


if sys.platform != "linux":  # /proc/self/fd, flock semantics
    pytestmark = pytest.mark.skip(reason="Linux only")

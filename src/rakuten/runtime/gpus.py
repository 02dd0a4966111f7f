"""One GPU per run on a shared GPU machine.

DVC runs queued experiments with several workers (`dvc queue start -j N`) but gives them no GPU
assignment: every worker's PyTorch would pick GPU 0. A GPU stage therefore claims free GPUs before
CUDA starts: an exclusive, non-blocking ``flock`` on one lock file per GPU id, held until the process
ends (the kernel releases it even after a crash, so no lock is ever stale), then narrows
``CUDA_VISIBLE_DEVICES`` to what it holds. A run that finds every GPU taken waits, saying so, until
one is released: more workers than GPUs queue up instead of sharing a GPU's memory. Which GPU a run
gets changes nothing in its outputs.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping

from rakuten.core.errors import PipelineError

LOCK_DIR_ENV = "RAKUTEN_GPU_LOCKS"  # where the lock files live ("off": no claim); machine set-up, not a param
LOG = logging.getLogger("rakuten")
_held: list[int] = []  # descriptors of the claimed lock files, open for the process's lifetime


def lock_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$RAKUTEN_GPU_LOCKS``, else ``<system temp>/rakuten-gpu-locks``: one folder per machine, shared
    by every user's runs."""
    return Path(environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "rakuten-gpu-locks")


def release_all() -> None:
    """Give back every GPU this process claimed (a process that exits releases them anyway)."""
    while _held:
        os.close(_held.pop())


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPU ids this process may use, found without initialising CUDA (after which a change of
    ``CUDA_VISIBLE_DEVICES`` is ignored): that variable when set, else ``nvidia-smi``'s list."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [part.strip() for part in environ["CUDA_VISIBLE_DEVICES"].split(",")]
        return [] if not ids[0] or ids[0].startswith("-") else ids
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):  # no driver, no GPU: nothing to claim
        return []
    return [line.strip() for line in listing.splitlines() if line.strip()]


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # read-only: another user's lock file works too
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _unusable_lock_dir(directory: Path, exc: OSError) -> PipelineError:
    """One line naming the folder, the variable that chose it and the two ways out: a lock folder
    is machine set-up, so the user fixes the environment, not the params."""
    return PipelineError(
        f"GPU lock folder {directory} cannot be used ({exc.strerror or exc}); set {LOCK_DIR_ENV} "
        f"to a writable folder, or {LOCK_DIR_ENV}=off to share GPUs without claiming them"
    )


def _prepare_lock_dir(directory: Path) -> None:
    """Create the shared lock folder (world-writable with the sticky bit, as /tmp, when we own it),
    turning an unwritable or non-folder path into one line instead of an OSError traceback."""
    try:
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        if directory.stat().st_uid == os.getuid():
            directory.chmod(0o1777)  # every user of the machine can add lock files, as in /tmp
    except OSError as exc:
        raise _unusable_lock_dir(directory, exc) from exc


def claim(
    count: int, gpus: list[str], directory: Path, poll_seconds: float = 5.0, timeout_seconds: float | None = None
) -> list[str]:
    """Lock ``count`` of ``gpus`` (the lowest free ids first) and return them, waiting while fewer
    are free. The locks stay held until the process exits."""
    if count > len(gpus):
        raise PipelineError(
            f"{count} GPU(s) wanted but {len(gpus)} visible ({','.join(gpus) or 'none'}); "
            "lower the stage's processes or make more GPUs visible (CUDA_VISIBLE_DEVICES)"
        )
    _prepare_lock_dir(directory)
    started, announced = time.monotonic(), False
    while True:
        taken: list[tuple[str, int]] = []
        for gpu in gpus:
            try:
                fd = _try_lock(directory / f"gpu-{gpu}.lock")
            except OSError as exc:
                for _, held_fd in taken:
                    os.close(held_fd)
                raise _unusable_lock_dir(directory, exc) from exc
            if fd is not None:
                taken.append((gpu, fd))
                if len(taken) == count:
                    _held.extend(fd for _, fd in taken)
                    return [gpu for gpu, _ in taken]
        for _, fd in taken:  # not enough: give back what we held, so that two waiters cannot deadlock
            os.close(fd)
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise PipelineError(
                f"no {count} free GPU(s) among {','.join(gpus)} after {timeout_seconds:.0f} s (locks in {directory})"
            )
        if not announced:
            LOG.info(
                "waiting for %d free GPU(s): GPUs %s are held by other runs (locks in %s)",
                count,
                ",".join(gpus),
                directory,
            )
            announced = True
        time.sleep(poll_seconds)


def pin_free_gpus(device: str, count: int = 1, environ: os._Environ | dict = os.environ) -> list[str]:
    """Claim ``count`` free GPUs for this run and make them the only visible ones; call before torch
    touches CUDA. Nothing to do on CPU (``device: cpu`` or no GPU) or inside a torchrun worker (its
    launcher claimed for all ranks; each rank takes its LOCAL_RANK among them), nor with
    ``RAKUTEN_GPU_LOCKS=off`` (runs that share GPUs on purpose)."""
    if device == "cpu" or "LOCAL_RANK" in environ or environ.get(LOCK_DIR_ENV) == "off":
        return []
    gpus = visible_gpus(environ)
    if not gpus:
        return []
    held = claim(count, gpus, lock_dir(environ))
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(held)
    LOG.info("GPU %s claimed for this run (%d visible)", ",".join(held), len(gpus))
    return held

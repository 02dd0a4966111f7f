"""Worker process pools whose workers die with their parent.

Why: a stage killed with SIGKILL (the OOM killer, ``kill -9``, a scheduler's hard stop) cannot run
any cleanup, and the workers of a plain :class:`~concurrent.futures.ProcessPoolExecutor` then live
on, re-parented to init, blocked on a queue nobody reads. Every pool of the pipeline comes from
:func:`process_pool`, whose workers ask the kernel to kill them when their parent dies (Linux
``prctl(PR_SET_PDEATHSIG)``); elsewhere a watchdog thread in each worker exits when the parent is gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process exit as soon as ``parent_pid`` is no longer its parent."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


#: what this worker process works from (:func:`set_worker_state`); None outside a pool's worker
_worker_state: Any = None


def set_worker_state(state: Any) -> None:
    """Keep ``state`` (the inputs every task of this worker shares, or what its initializer loaded) for
    :func:`worker_state`: sent once per worker instead of once per task."""
    global _worker_state
    _worker_state = state


def worker_state() -> Any:
    """What :func:`set_worker_state` (or :func:`process_pool`'s ``state``) kept in this worker."""
    return _worker_state


def worker_count(n: int) -> int:
    """Worker processes of an ``n_jobs`` / ``workers`` knob: ``n``, or one per core for 0."""
    return n or (os.cpu_count() or 1)


def _init_worker(parent_pid: int, then: Callable[[], None] | None, state: Any = None) -> None:
    die_with_parent(parent_pid)
    set_worker_state(state)
    if then is not None:
        then()


def process_pool(
    n_jobs: int, initializer: Callable[[], None] | None = None, spawn: bool = False, state: Any = None
) -> ProcessPoolExecutor:
    """A :class:`ProcessPoolExecutor` of ``n_jobs`` workers that die with this process;
    ``initializer`` (picklable, no arguments: bind them with :func:`functools.partial`) runs in each worker
    after that is arranged. ``state`` is sent to each worker once, for its tasks to read with
    :func:`worker_state`. ``spawn``: fresh interpreters instead of forks, for a parent that already runs
    torch's threads (a fork copies them mid-state) or whose OpenMP pool has run (a fork of it hangs)."""
    context = multiprocessing.get_context("spawn") if spawn else None
    return ProcessPoolExecutor(
        n_jobs, mp_context=context, initializer=_init_worker, initargs=(os.getpid(), initializer, state)
    )

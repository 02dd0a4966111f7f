"""The launcher side of data-parallel training: torchrun's command line for a stage, and the launcher process.

Why a module of its own: :mod:`rakuten.runtime.distributed` decides *whether* a stage relaunches itself;
this says *how*: on one machine (``--standalone``) or as one of several machines joining node 0's
rendezvous (:func:`check_nodes`, :func:`launch_command`), and how the launcher stops and leaves
(:func:`launcher_main`, :func:`wait_forwarding`, :func:`exit_like_torchrun`).

Several machines use torch's *static* rendezvous, not c10d (measured with torch 2.14: two launchers on
one host, node_rank 1 started first, c10d made it global rank 0): c10d ignores ``--node_rank`` and ranks
the machines by host name and process id, so which machine writes the outputs would be chance. With
``static``, node ``node_rank`` holds global ranks ``node_rank x processes ..``, node 0 hosts the store at
``rdzv_endpoint`` and its rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from rakuten.core.errors import PipelineError
from rakuten.runtime.knobs import LaunchKnobs

log = logging.getLogger(__name__)

#: torchrun's rendezvous of several machines: ``static`` keeps ``--node_rank`` (node 0 = global rank 0 = the
#: writer, hosting the store at the endpoint); ``c10d`` would rank the machines by host name and pid instead
RDZV_BACKEND = "static"
#: ``rdzv_endpoint``: host (name, IPv4 or [IPv6]) and port
ENDPOINT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


def check_nodes(nodes: LaunchKnobs, launcher: str, key: str) -> None:
    """The machine knobs of ``nodes`` (a section's config) make one rendezvous, or one line naming the keys.

    Why before any process starts: a machine that joins a rendezvous no other can join waits for torch's
    timeout (10 minutes) before it fails.
    """
    count, rank, endpoint = nodes.nnodes, nodes.node_rank, nodes.rdzv_endpoint
    if count < 1:
        raise PipelineError(f"{key}.nnodes = {count}, expected >= 1")
    if not 0 <= rank < count:
        raise PipelineError(f"{key}.node_rank = {rank}, expected 0 .. {count - 1} ({key}.nnodes = {count})")
    if count == 1:
        if endpoint:
            raise PipelineError(
                f"{key}.rdzv_endpoint = {endpoint!r} with {key}.nnodes = 1; expected an empty endpoint on one "
                f"machine (--standalone), or {key}.nnodes > 1"
            )
        return
    if launcher != "torchrun":
        raise PipelineError(f"{key}.nnodes = {count} needs {key}.launcher = 'torchrun', got {launcher!r}")
    if not endpoint:
        raise PipelineError(
            f"{key}.nnodes = {count} needs {key}.rdzv_endpoint, the host:port of node 0 that every machine "
            "joins (e.g. 10.0.0.1:29400)"
        )
    match = ENDPOINT.fullmatch(endpoint)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise PipelineError(
            f"{key}.rdzv_endpoint = {endpoint!r}, expected host:port of node 0 (e.g. 10.0.0.1:29400; port 1-65535)"
        )
    if not nodes.rdzv_id:
        raise PipelineError(f"{key}.rdzv_id = '', expected the job's name, the same on every machine")


def launch_command(
    script: str | Path,
    processes: int,
    args: Sequence[str] = (),
    python: str | None = None,
    nodes: LaunchKnobs | None = None,
) -> list[str]:
    """The argv that runs ``script`` under torchrun with ``processes`` workers on this machine.

    ``--standalone``: a local rendezvous on a free port (no MASTER_ADDR/PORT to choose; two jobs on
    one machine do not collide). With ``nodes.nnodes`` > 1 (checked by :func:`check_nodes`) this machine
    joins the rendezvous at node 0's endpoint instead, as node ``node_rank`` (:data:`RDZV_BACKEND`).
    ``python -m rakuten.runtime.distributed`` (``torch.distributed.run`` with a quiet stop,
    :func:`launcher_main`) rather than the ``torchrun`` entry point: the same interpreter (virtual
    environment) as the stage, with or without PATH.
    """
    if processes < 1:
        raise PipelineError(f"processes = {processes}, expected >= 1")
    where = ["--standalone"]
    if nodes is not None and nodes.nnodes > 1:
        where = [
            f"--nnodes={nodes.nnodes}",
            f"--node_rank={nodes.node_rank}",
            f"--rdzv_backend={RDZV_BACKEND}",
            f"--rdzv_endpoint={nodes.rdzv_endpoint}",
            f"--rdzv_id={nodes.rdzv_id}",
        ]
    module = [python or sys.executable, "-m", "rakuten.runtime.distributed"]
    return [*module, *where, f"--nproc_per_node={processes}", str(script), *args]


def launcher_main(argv: Sequence[str]) -> int:
    """``torch.distributed.run`` on ``argv``, returning 128 + the signal number when stopped by a signal.

    Why: torch's launcher answers SIGTERM/SIGINT by stopping its ranks and then lets its
    ``SignalException`` escape as a traceback, and a second signal during that shutdown (a group-wide
    kill plus the stage's forward) cuts the shutdown short with a second traceback. Here the first
    signal stops the run, later ones are ignored while the ranks are stopped, and the exception
    becomes an exit code the stage reports in one line (``rakuten.runtime.distributed.relaunch``). A failed rank gives
    exit code 1 without the launcher's ``ChildFailedError`` traceback, as torchrun's own code; a machine that
    cannot join the rendezvous (node 0 not started, the port closed) one ``error:`` line and exit code 1.
    """
    import torch.distributed as torch_dist
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import api as elastic
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    stopping: list[int] = []

    def stop_once(signum: int, frame: Any) -> None:
        if stopping:
            return
        stopping.append(signum)
        raise elastic.SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))

    if hasattr(elastic, "_terminate_process_handler"):  # torch installs it by this name when it starts the ranks
        elastic._terminate_process_handler = stop_once
    _leave_together()
    try:
        torchrun.main(list(argv))
    except elastic.SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError:  # the failing rank printed its own error and torch logged its exit code:
        return 1  # the launcher's traceback adds nothing (the stage says the run failed)
    except torch_dist.DistError as exc:  # this machine's launcher could not reach the others (rendezvous, store)
        first = (str(exc).strip().splitlines() or [""])[0].rstrip(".")
        sys.stderr.write(
            f"error: torchrun: {type(exc).__name__}: {first}; are all nnodes machines started, with node 0's "
            "host:port as rdzv_endpoint, reachable from this one?\n"
        )
        return 1
    return 0


def _leave_together() -> None:
    """Make the machines' launchers leave torch's exit barrier one after the other, node 0 last.

    Why: node 0's launcher hosts the rendezvous store; torch lets it exit as soon as the last machine
    has *arrived* at the exit barrier, so a machine still waiting there on that store logged a
    "Connection reset" error and a C++ traceback at the end of every successful run. Here each
    launcher counts itself out after the barrier and node 0 waits (at most a minute) for them all.
    One machine (``--standalone``) has nothing to wait for.
    """
    from torch.distributed.elastic.agent.server import api

    barrier = getattr(api.SimpleElasticAgent, "_exit_barrier", None)
    if barrier is None or getattr(barrier, "leaves_together", False):
        return

    def exit_barrier(agent: Any) -> None:
        barrier(agent)
        group = agent._worker_group
        if group.group_world_size <= 1:
            return
        try:
            left = agent._store.add("rakuten/left", 1)
            deadline = time.monotonic() + 60
            while group.group_rank == 0 and left < group.group_world_size and time.monotonic() < deadline:
                time.sleep(0.05)
                left = agent._store.add("rakuten/left", 0)
        except Exception as exc:  # noqa: BLE001 - the run succeeded; leaving early only costs that log line
            log.debug("leaving the rendezvous: %s", exc)

    exit_barrier.leaves_together = True  # type: ignore[attr-defined]
    api.SimpleElasticAgent._exit_barrier = exit_barrier


def wait_forwarding(proc: subprocess.Popen, key: str) -> tuple[int, int | None]:
    """Wait for the launcher, forwarding SIGTERM/SIGINT to it; ``(exit code, first signal or None)``.

    After a signal the launcher gets 60 s to stop its ranks (they remove their temporaries), then
    it is killed. A signal this process ignores (SIGINT of a background job) stays ignored."""
    received: list[int] = []

    class _Stop(Exception):
        pass

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            proc.send_signal(signum)
        received.append(signum)
        if len(received) == 1:
            raise _Stop

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return proc.wait(), None
    watched = [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, forward) for s in watched}
    try:
        try:
            return proc.wait(), None
        except _Stop:
            log.info("%s: %s received, stopping the torchrun processes", key, signal.Signals(received[0]).name)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        return code, received[0]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def exit_like_torchrun(code: int, stopped_by: int | None, key: str, run: str) -> None:
    """Exit with the launcher's code and one ``error:`` line when ``run`` failed or was stopped; return on success."""
    if stopped_by is not None or code < 0 or code > 128:  # this run, or the launcher alone, was stopped
        signum = stopped_by or (-code if code < 0 else code - 128)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        who = "" if stopped_by is not None else " (the torchrun launcher)"
        sys.stderr.write(f"error: {key}: stopped by {name}{who}; no partial output was kept\n")
        raise SystemExit(128 + signum)
    if code:
        sys.stderr.write(f"error: {key}: the {run} failed (exit {code}); see the ranks' output above\n")
        raise SystemExit(code)

"""Data-parallel training of the deep stages with ``torch.distributed`` (N processes, one machine or several).

Why a module of its own: the two deep stages (``camembert``, ``resnet50``) share the same rules, and
they are easy to get subtly wrong:

* **Who starts the processes.** ``<stage>.launcher: torchrun`` with ``<stage>.processes: N > 1``
  makes the stage script re-execute itself under torch's launcher, ``python -m rakuten.runtime.distributed
  --standalone --nproc_per_node N`` (:func:`relaunch`; that is ``torch.distributed.run``, see
  :func:`launcher_main`), so ``dvc.yaml`` keeps ``cmd: python stages/<x>.py`` and
  ``dvc repro`` / ``dvc exp run -S <stage>.launcher=torchrun`` start the launcher themselves. A script
  already started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) is never relaunched.
* **Several machines.** ``<stage>.nnodes: M > 1`` replaces ``--standalone`` by a rendezvous at node 0's
  ``rdzv_endpoint``; every machine runs the stage with its own ``node_rank`` (the command line and its
  checks: :mod:`rakuten.runtime.launcher`).
* **How it stops.** SIGTERM or SIGINT to the stage is forwarded to the launcher, which stops its
  ranks; the stage then says ``error: <stage>: stopped by SIGTERM`` and exits 128 + the signal number,
  with no launcher traceback (:func:`launcher_main`).
* **Who writes.** Every rank trains; only global rank 0 (:func:`is_main`: ``RANK``, not ``LOCAL_RANK``, so
  on node 0 only) writes models, reports and curves; the others return after training
  (:func:`worker_fit`), so no output is written twice or half.
* **Where each rank runs.** NCCL and ``cuda:LOCAL_RANK`` with CUDA, gloo on CPU (:func:`init`).

Threads per rank stay the stage's ``num_threads`` (set by the model code, as in one process): on a
2-core box, 2 processes x 1 thread.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from rakuten.core.errors import PipelineError
from rakuten.runtime import gpus
from rakuten.runtime.knobs import LAUNCHERS, LaunchKnobs, launch_defaults
from rakuten.runtime.launcher import (  # noqa: F401 - launch_command, launcher_main: this module's API too
    check_nodes,
    exit_like_torchrun,
    launch_command,
    launcher_main,
    wait_forwarding,
)

log = logging.getLogger(__name__)

#: environment variables torchrun sets in every worker; all three mean "already launched"
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: the knobs that say how a stage is started, not what it trains (values: their defaults); left out of a
#: saved model's config file, so a model reads the same whoever trained it and older saved models load
LAUNCH_KNOBS: dict[str, Any] = launch_defaults()
#: collective timeout: rank 0 evaluates alone between epochs while the others wait at a broadcast
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place in the job: global ``rank``, ``local_rank`` (its GPU), ``size`` (processes)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """True inside a process started by torchrun (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` all set)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def world() -> World:
    """This process's :class:`World` from torchrun's environment; one process of one otherwise."""
    if not launched():
        return World()
    try:
        return World(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    except ValueError:
        raise PipelineError(
            f"environment: RANK/LOCAL_RANK/WORLD_SIZE = {os.environ['RANK']!r}/"
            f"{os.environ['LOCAL_RANK']!r}/{os.environ['WORLD_SIZE']!r}, expected integers "
            "(as torchrun sets them)"
        ) from None


def is_main() -> bool:
    """Rank 0 (or a single process): the one process that writes outputs."""
    return world().is_main


def visible_gpus() -> int:
    """CUDA devices this process may use (0 without CUDA), counted without starting CUDA: the launching
    process then narrows ``CUDA_VISIBLE_DEVICES`` to the GPUs it claims (:mod:`rakuten.runtime.gpus`)."""
    return len(gpus.visible_gpus())


def resolve_processes(processes: int, key: str) -> int:
    """``processes`` as a count: 0 means one per visible CUDA GPU (one line when there is none)."""
    if processes > 0:
        return processes
    gpus = visible_gpus()
    if gpus == 0:
        raise PipelineError(
            f"{key}.processes = 0 means one process per visible GPU, but no CUDA GPU is visible; "
            f"set {key}.processes to a count (e.g. 2 gloo processes on CPU)"
        )
    return gpus


def check_launch(launcher: str, processes: int, key: str) -> int:
    """The number of processes asked for (0 resolved); a bad launcher or count is one line naming the key."""
    if launcher not in LAUNCHERS:
        raise PipelineError(f"{key}.launcher = {launcher!r}, expected one of {', '.join(LAUNCHERS)}")
    if processes < 0:
        raise PipelineError(f"{key}.processes = {processes}, expected >= 0")
    if launcher == "none":
        return 1
    return resolve_processes(processes, key)


def relaunch(
    launcher: str,
    processes: int,
    key: str,
    batch: tuple[str, int] | None = None,
    script: str | Path | None = None,
    device: str | None = None,
    nodes: LaunchKnobs | None = None,
) -> None:
    """Re-execute this stage under torchrun when the params ask for it, then exit with torchrun's code.

    With ``device`` (the stage's device knob), first claim the free GPUs this run needs, one per
    process, before CUDA starts (:func:`rakuten.runtime.gpus.pin_free_gpus`; one per dvc queue worker), so a
    one-process run claims its GPU too and torchrun's ranks inherit the claimed set. ``nodes``: the
    section's config, whose ``nnodes``, ``node_rank``, ``rdzv_endpoint``, ``rdzv_id`` say which machines train
    together (:func:`check_nodes`); None = this machine alone.

    Returns (does nothing) when ``launcher`` is ``none``, when one process on one machine is asked for, or
    when this process was itself started by torchrun (a worker, or a user's own ``torchrun stages/<x>.py``).
    ``batch`` = (dotted key, global batch size): checked to split evenly *before* any process starts.
    A failed run adds one ``error:`` line after the ranks' own output and exits with torchrun's code.
    """
    n = check_launch(launcher, processes, key)
    nodes = nodes or LaunchKnobs()
    check_nodes(nodes, launcher, key)
    if device is not None:
        gpus.pin_free_gpus(device, n)
    if launched() or n * nodes.nnodes <= 1:
        return
    if batch is not None:
        per_rank_batch(batch[1], n * nodes.nnodes, batch[0])
    argv = launch_command(script or sys.argv[0], n, sys.argv[1:], nodes=nodes)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, set here to skip its warning banner
    here = f" on node {nodes.node_rank} of {nodes.nnodes}" if nodes.nnodes > 1 else ""
    log.info("%s: launching %d processes%s: %s", key, n, here, " ".join(argv))
    proc = subprocess.Popen(argv, env=env)
    code, stopped_by = wait_forwarding(proc, key)
    exit_like_torchrun(code, stopped_by, key, f"{n}-process torchrun run{here}")
    if nodes.node_rank > 0:  # the outputs of a multi-machine run are node 0's
        log.info(
            "%s: node %d trained its share; node 0 writes the outputs, none are written here", key, nodes.node_rank
        )
    raise SystemExit(0)


def backend(device: str) -> str:
    """NCCL between GPUs, gloo on CPU (the backend every torch build has)."""
    return "nccl" if device == "cuda" else "gloo"


def init(device: str) -> World:
    """Join the process group when started by torchrun with several processes (idempotent); the World.

    With CUDA each rank takes ``cuda:LOCAL_RANK`` (set as the current device, which the model code's
    plain ``"cuda"`` then means). The group is destroyed at interpreter exit (:func:`destroy`).
    """
    here = world()
    if not here.distributed:
        return here
    import torch
    import torch.distributed as dist

    if device == "cuda":
        if here.local_rank >= torch.cuda.device_count():
            raise PipelineError(
                f"rank {here.rank}: LOCAL_RANK {here.local_rank} but only "
                f"{torch.cuda.device_count()} GPUs are visible; expected --nproc_per_node <= GPUs"
            )
        torch.cuda.set_device(here.local_rank)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend(device), "timeout": TIMEOUT}
        if device == "cuda":
            kwargs["device_id"] = torch.device("cuda", here.local_rank)
        dist.init_process_group(**kwargs)
        atexit.register(destroy)
        log.info("rank %d of %d joined the %s process group", here.rank, here.size, kwargs["backend"])
    return here


def destroy() -> None:
    """Leave the process group (clean exit of a rank; a no-op when none was joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast(value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (any picklable object; returned as is in one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def per_rank_batch(batch_size: int, size: int, key: str) -> int:
    """Each rank's share of the global ``batch_size``; a size that does not divide it is one line.

    Why refuse rather than round: the global batch (and so the optimisation) must be the param's,
    whatever the number of processes.
    """
    if batch_size % size:
        raise PipelineError(
            f"{key} = {batch_size} is not a multiple of the {size} processes; expected a batch "
            "size divisible by the process count (the global batch is split evenly)"
        )
    return batch_size // size


def worker_fit(module: ModuleType, config: Any, frame: Any) -> None:
    """A rank other than 0: its share of ``module.train`` on the same train/val rows as rank 0's
    :func:`rakuten.models.runner.fit_and_report`, and nothing written (rank 0 writes every output)."""
    split = frame["split"]
    module.train(frame[split == "train"].reset_index(drop=True), frame[split == "val"].reset_index(drop=True), config)
    log.info("rank %d: training done; rank 0 writes the outputs", world().rank)


def drop_launch_knobs(meta_file: Path) -> None:
    """Remove :data:`LAUNCH_KNOBS` from the ``config`` of a model's meta file (``torch_utils.write_meta``'s
    format: JSON, indent 2, sorted keys), so it is byte for byte the file of a one-process run."""
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    for name in LAUNCH_KNOBS:
        meta["config"].pop(name, None)
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def with_launch_knobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """A saved model's config with the launch knobs at their defaults (a loaded model predicts in one process)."""
    return {**LAUNCH_KNOBS, **config}


if __name__ == "__main__":  # the launcher a stage re-executes itself under (launch_command)
    sys.exit(launcher_main(sys.argv[1:]))

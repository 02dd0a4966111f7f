"""Knob groups every torch stage shares, declared once and composed into each section by inheritance.

Why: ``device``, ``precision``, ``num_threads``, ``compile``, ``eval_batch_size`` and the launch knobs mean
the same thing in ``camembert``, ``resnet50`` and ``joint``; declaring them once keeps their defaults, bounds and help
from drifting apart (as Hugging Face composes ``TrainingArguments`` from argument dataclasses). A
section lists the groups it takes as base classes: ``class ResnetConfig(ProfileView, TorchKnobs,
CompileKnob, LaunchKnobs)``; its YAML block stays flat (``resnet50.device``, ``resnet50.launcher``).

Every knob here is tracked (changing it reruns the stage), though the thread count and the device do not
change the trained bits on CPU (the numeric policy pins them, ``tests/integration/test_determinism.py``):
each is saved in the model's config file (``resnet.json``, ``camembert.json``, ``joint.json``), which is an
output. Only the launch knobs are left out of that file (``rakuten.runtime.distributed.LAUNCH_KNOBS``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rakuten.core.config import knob, to_dict

#: where a torch stage runs (``device`` knob) and its number format (``precision`` knob)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: how a torch stage starts its processes (``launcher`` knob)
LAUNCHERS = ("none", "torchrun")


@dataclass(frozen=True)
class TorchKnobs:
    """Where a torch stage runs: the device, the number format, the CPU threads."""

    device: str = knob("auto", "auto = CUDA when present, else CPU | cpu | cuda", choices=DEVICES)
    precision: str = knob("auto", "auto = bf16 (or fp16) on CUDA, fp32 on CPU | fp32 | fp16 | bf16", choices=PRECISIONS)
    num_threads: int = knob(
        1,
        "torch CPU threads (0 = all cores); 1 is fastest on a shared 2-core box. Tracked: saved in the model's "
        "config file",
        lo=0,
        hi=256,
    )


@dataclass(frozen=True)
class CompileKnob:
    """``torch.compile`` of a trained network."""

    compile: bool = knob(
        False, "torch.compile the network for training (GPU: faster after a one-off compile of ~1 min)"
    )


@dataclass(frozen=True)
class EvalBatchKnob:
    """Rows per forward pass when a trained network scores val, test and new rows."""

    eval_batch_size: int = knob(
        128,
        "batch size of evaluation and prediction. Tracked: the batch sets the padding of texts and the kernels' "
        "blocking, so the last bits of the probabilities may move",
        lo=1,
        hi=4096,
    )


@dataclass(frozen=True)
class LaunchKnobs:
    """How many processes train the stage: one, or data-parallel ranks under torchrun, on one machine or on
    several (``nnodes``; checked together by :func:`rakuten.runtime.launcher.check_nodes`)."""

    launcher: str = knob(
        "none",
        "none = one process; torchrun = the stage re-executes itself under torch's launcher, `python -m "
        "rakuten.runtime.distributed --standalone --nproc_per_node <processes>` (so `dvc repro` starts it; "
        "with nnodes > 1 a rendezvous of several machines instead of --standalone): data-parallel training "
        "(NCCL on GPUs, with SyncBatchNorm for batch-norm networks; gloo on CPU), only global rank 0 writes",
        choices=LAUNCHERS,
    )
    processes: int = knob(
        1,
        "processes with launcher: torchrun, on each machine (one per GPU; 0 = one per visible GPU); the "
        "profile's batch_size stays the global batch and must divide by processes x nnodes",
        lo=0,
        hi=1024,
    )
    nnodes: int = knob(
        1,
        "machines that train together (launcher: torchrun); 1 = this machine alone (--standalone). With more, "
        "run the stage on every machine with the same data and params but its own node_rank, all with the "
        "rdzv_endpoint of node 0; node 0 writes the outputs (docs/distributed.md)",
        lo=1,
        hi=1024,
    )
    node_rank: int = knob(
        0,
        "this machine's place among the nnodes machines, 0 .. nnodes - 1; node 0 hosts the rendezvous and its "
        "rank 0 writes every output, the other nodes train and write nothing",
        lo=0,
        hi=1023,
    )
    rdzv_endpoint: str = knob(
        "",
        "host:port of node 0 that every machine joins (e.g. 10.0.0.1:29400; a port open between the machines); "
        "empty = one machine (--standalone). Needed when nnodes > 1",
    )
    rdzv_id: str = knob(
        "rakuten",
        "the job's name in the rendezvous, the same on every machine (its keys in node 0's store)",
        nonempty=True,
    )


def launch_defaults() -> dict[str, Any]:
    """The launch knobs at their declared defaults (what a saved model's config gets back on loading)."""
    return to_dict(LaunchKnobs())


def group_names(group: type) -> tuple[str, ...]:
    """The knob names a group declares."""
    return tuple(f.name for f in dataclasses.fields(group))

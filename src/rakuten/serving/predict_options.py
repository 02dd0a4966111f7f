"""The options of ``rakuten predict`` beyond its files: chunks and workers, and the cluster of ``--engine ray``.

Why a module of their own: the command's parser needs them at start-up, and :mod:`rakuten.serving.stream`
and :mod:`rakuten.serving.distributed` import torch and the models; kept here, ``rakuten check`` and
``rakuten compare`` start without loading either.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rakuten.core.config import knob
from rakuten.core.errors import PipelineError
from rakuten.core.parallel import worker_count


@dataclass(frozen=True)
class StreamConfig:
    """How ``rakuten predict`` works through a file (runtime only: the output is the same bytes whatever
    the values)."""

    chunk_rows: int = knob(
        1024, "rows cleaned and scored together: memory grows with it, the output does not change", lo=1
    )
    workers: int = knob(
        1,
        "processes scoring chunks in parallel, each with its own copy of the models and one torch thread "
        "(0 = one per core)",
        lo=0,
        hi=256,
    )

    def processes(self) -> int:
        """Worker processes: ``workers``, or one per core for 0."""
        return worker_count(self.workers)


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """``rakuten predict --engine ray``: the options of scoring on a Ray cluster (docs/scaling.md)."""
    g = p.add_argument_group("scoring on a Ray cluster (--engine ray; docs/scaling.md)")
    g.add_argument(
        "--engine",
        choices=("process", "ray"),
        default="process",
        help="process: on this machine (default); ray: on a Ray cluster, --workers actors each loading the "
        "models once and scoring --chunk-rows rows at a time; the same CSV byte for byte",
    )
    g.add_argument(
        "--address",
        default=None,
        help="the cluster: local (a Ray instance started here for this run), auto (the cluster this machine "
        "joined with `ray start`) or the head's host:port (default: local)",
    )
    g.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs Ray reserves per actor, and its torch threads (default: 1)",
    )
    g.add_argument(
        "--max-restarts",
        type=int,
        default=None,
        help="times a worker that died is restarted and its batch scored again (default: 3)",
    )
    g.add_argument(
        "--ship-models",
        action="store_true",
        default=None,
        help="send the models' files to the workers through Ray's object store (checked there against "
        "dvc.lock) instead of loading --models from a path every worker sees",
    )


#: the cluster options of :func:`add_cluster_options` that only ``--engine ray`` takes
CLUSTER_OPTIONS = ("address", "cpus_per_worker", "max_restarts", "ship_models")


def cluster_only(args: argparse.Namespace) -> None:
    """The cluster options given without ``--engine ray`` are one line, never silently ignored."""
    given = ["--" + name.replace("_", "-") for name in CLUSTER_OPTIONS if getattr(args, name) is not None]
    if given:
        raise PipelineError(f"{', '.join(given)}: only with --engine ray")

"""Batch scoring on a Ray cluster: ``rakuten predict --engine ray``.

One process scores a few tens of rows per second on a CPU (the transformer and the CNN dominate), so
a catalog of millions of rows needs more machines. The input rows are cut into batches in input order
and a pool of Ray actors scores them (Ray Data ``map_batches``): each actor loads the verified models
once (:meth:`Predictor.load`, the same integrity check as one process) and scores batch after batch
with :meth:`Predictor.predict_rows`, the function the single-process run uses, so the CSV is the same
byte for byte. Every batch carries its rows' positions: the driver puts the rows back in input order
and refuses a result in which a row is missing or appears twice. A worker process that dies mid-batch
is restarted by Ray and its batch scored again; the position check is what proves the retry neither
lost nor repeated a row.

What the workers need: the ``rakuten`` package in the locked environment, the image folder at the
same path (a shared mount), and the models folder at the same path, or ``ship_models``: its files put
once in the object store and unpacked by each actor in its own temporary folder, then checked against
the same dvc.lock hashes before anything is loaded. Every knob here is runtime only (where and how wide
to run): none changes a prediction, so none is a tracked param.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords
from rakuten.core.numerics import pinned_environment
from rakuten.data.ingest import exact_integers
from rakuten.serving.distributed_worker import ERROR, INDEX, POSITION, BatchScorer, KillOnce, pack_models, partitions
from rakuten.serving.predict import read_products
from rakuten.serving.predict_options import CLUSTER_OPTIONS
from rakuten.serving.stream import StreamResult, write_stream

log = logging.getLogger(__name__)

LOCAL = "local"  # --address local: a Ray instance started on this machine for this run only


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide to score (runtime only: the predictions never depend on them)."""

    address: str = LOCAL  # `local`, `auto` (the cluster this machine joined) or the head's host:port
    workers: int = 1  # actors, each holding the models once (0: as many as the cluster's CPUs hold)
    batch_rows: int = 1024  # rows per batch (`--chunk-rows`): the unit of work and of retry
    cpus_per_worker: float = 1.0  # CPUs reserved per actor, and its torch threads
    max_restarts: int = 3  # times a dead actor is restarted, and its batch retried
    ship_models: bool = False  # put the models' files in the object store instead of reading a shared path

    def check(self) -> None:
        """One line naming the option that is out of range."""
        if self.workers < 0:
            raise PipelineError(f"--workers {self.workers}: expected an integer >= 0 (0: one per cluster CPU)")
        if self.batch_rows < 1:
            raise PipelineError(f"--chunk-rows {self.batch_rows}: expected an integer >= 1")
        if not self.cpus_per_worker > 0:
            raise PipelineError(f"--cpus-per-worker {self.cpus_per_worker}: expected a number > 0")
        if self.max_restarts < 0:
            raise PipelineError(f"--max-restarts {self.max_restarts}: expected an integer >= 0")
        if not self.address:
            raise PipelineError("--address: expected `local`, `auto` or the head's host:port")
        if self.address.startswith("ray://"):
            raise PipelineError(
                f"--address {self.address}: Ray Data does not run through Ray Client (ray://); run the command "
                "on a machine of the cluster with --address auto or the head's host:port (docs/scaling.md)"
            )


# ------------------------------------------------------------------------------- the driver


def in_order(tables: Iterable[pd.DataFrame], n_rows: int) -> Iterator[pd.DataFrame]:
    """The batches' prediction tables, indexed like the input, each checked to hold exactly the rows that
    come next: a lost row, a row scored twice (a retried batch must replace, never add) or a batch out of
    order stops the run before the CSV is in place, as does the one-line error a worker sent back."""
    expected = 0
    for table in tables:
        if ERROR in table:
            raise PipelineError(str(table[ERROR].iloc[0]))
        positions = table[POSITION].to_numpy(np.int64)
        if not np.array_equal(positions, np.arange(expected, expected + len(positions))):
            got = f"rows {positions[0]}..{positions[-1]}" if len(positions) else "no rows"
            raise PipelineError(
                f"the cluster returned {got} ({len(positions)} rows) where rows from {expected} were due: "
                "a batch lost, repeated or out of order; refusing to write the predictions"
            )
        expected += len(positions)
        out = table.drop(columns=[POSITION]).set_index(INDEX)
        out.index = pd.Index(out.index.to_numpy(np.int64), name=None)
        yield out
    if expected != n_rows:
        raise PipelineError(f"the cluster returned {expected} predictions for {n_rows} rows; refusing to write them")


@contextlib.contextmanager
def ray_session(options: ClusterOptions) -> Iterator[Any]:
    """Connected to the cluster at ``options.address``, disconnected at the end; a process already
    connected stays so. ``local``: a Ray instance started here for this run (one CPU slot per worker),
    its session folder (logs, sockets) in a temporary folder removed once it has stopped."""
    import ray
    import ray.data

    if ray.is_initialized():
        yield ray
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    with contextlib.ExitStack() as stack:
        try:
            if options.address == LOCAL:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a run's own instance reports nothing home
                cpus = math.ceil(options.workers * options.cpus_per_worker) if options.workers else None
                session = stack.enter_context(tempfile.TemporaryDirectory(prefix="ray-", ignore_cleanup_errors=True))
                ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=session, **quiet)
            else:
                ray.init(address=options.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PipelineError(f"--address {options.address}: cannot reach a Ray cluster there ({exc})") from None
        try:
            yield ray
        finally:
            ray.shutdown()


def pool_size(ray: Any, options: ClusterOptions) -> int:
    """Actors to start: ``workers``, or as many as the cluster's CPUs hold for 0; one line when the
    cluster is too small (Ray would wait for CPUs that never come)."""
    have = float(ray.cluster_resources().get("CPU", 0.0))
    workers = options.workers or max(1, int(have // options.cpus_per_worker))
    if workers * options.cpus_per_worker > have:
        raise PipelineError(
            f"--workers {workers} x --cpus-per-worker {options.cpus_per_worker:g} needs "
            f"{workers * options.cpus_per_worker:g} CPUs; the cluster at {options.address} has {have:g}"
        )
    return workers


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """Ray Data hands batches back in input order while this lasts (a slow or retried batch holds the
    later ones back, so the CSV is written as it comes), without its progress bars (the driver's own
    ``predict`` progress counts the rows written); the settings are restored after."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, False
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = before


def _scored(ray: Any, parts: list[pd.DataFrame], kwargs: dict[str, Any], workers: int, options: ClusterOptions):
    """The batches mapped through a pool of ``workers`` :class:`BatchScorer` actors (lazy: runs when iterated).

    The workers start with the numeric policy's environment (:mod:`rakuten.core.numerics`): Ray imports
    numpy in a worker before ``rakuten`` could pin it there. One batch in flight per actor: a batch is
    seconds of work, and a worker that dies then holds up only the batch it was scoring. Restarts are
    bounded (Ray Data's default is endless, so a batch that always kills its worker would loop); Ray 2.60
    takes them only as ``ray_remote_args``, whose deprecation warning is silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ray.data.from_pandas(parts).map_batches(
            BatchScorer,
            batch_size=options.batch_rows,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs=kwargs,
            num_cpus=options.cpus_per_worker,
            runtime_env={"env_vars": pinned_environment()},
            max_restarts=options.max_restarts,
            max_task_retries=options.max_restarts,
        )


def _scorer_kwargs(x_csv, image_dir, models_dir, params, params_name, records, options, kill) -> dict[str, Any]:
    """The actors' constructor arguments: absolute paths (workers run elsewhere), or the shipped files."""
    models: str | dict[str, bytes] = str(models_dir)
    models_rel = "models"
    if options.ship_models:
        if records.key(models_dir) is None:
            raise PipelineError(f"--models {models_dir}: outside the project of {records.lock}; cannot ship it")
        models_rel = str(records.key(models_dir))
        models = pack_models(models_dir)
        size = sum(map(len, models.values())) / 1e6
        log.info("shipping %d model files (%.1f MB) once through the object store", len(models), size)
    return {
        "x_csv": str(x_csv),
        "image_dir": str(image_dir),
        "models": models,
        "params": params,
        "params_name": params_name,
        "records": records,
        "models_rel": models_rel,
        "kill": kill,
        "threads": max(1, round(options.cpus_per_worker)),
    }


def read_input(x_csv: Path) -> pd.DataFrame:
    """The input rows, checked here before any worker starts: the file's layout, and the ids each batch
    converts again (the same function, so the same error line as the single-process run)."""
    x = read_products(x_csv)
    for column in ("productid", "imageid"):
        exact_integers(x[column], x_csv, column)
    return x


def predict_distributed(
    x_csv: str | Path,
    image_dir: str | Path,
    output: str | Path,
    models_dir: str | Path = "models",
    params: dict | None = None,
    params_name: str = "params.yaml",
    options: ClusterOptions = ClusterOptions(),
    records: ArtifactRecords | None = None,
    kill: KillOnce | None = None,
) -> StreamResult:
    """Classify the products of a CSV in the X_test layout on a Ray cluster and write the CSV
    ``rakuten predict`` writes (atomically, as the batches come back in order); ``params``,
    ``params_name`` and ``records`` as in :meth:`Predictor.load`."""
    options.check()
    start = time.perf_counter()
    x_csv, image_dir, models_dir = Path(x_csv), Path(image_dir).resolve(), Path(models_dir).resolve()
    x = read_input(x_csv)
    records = records or ArtifactRecords.for_path(models_dir)
    kwargs = _scorer_kwargs(x_csv.resolve(), image_dir, models_dir, params, params_name, records, options, kill)
    parts = partitions(x, options.batch_rows)
    with ray_session(options) as ray, _data_context(ray):
        if options.ship_models:  # one copy in the object store; a list, so that actors get the reference
            kwargs["models"] = [ray.put(kwargs["models"])]
        workers = min(pool_size(ray, options), len(parts))  # an actor without a batch would only load models
        log.info("scoring %d rows in %d batches on %d workers (%s)", len(x), len(parts), workers, options.address)
        batches = _scored(ray, parts, kwargs, workers, options).iter_batches(batch_size=None, batch_format="pandas")
        result = write_stream(in_order(batches, len(x)), Path(output), len(x))
    result.seconds["predict"] = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------- the command line


def cluster_options(args: argparse.Namespace, workers: int, batch_rows: int) -> ClusterOptions:
    """The options of :func:`add_cluster_options` as given (the declared defaults for the others)."""
    given = {name: getattr(args, name) for name in CLUSTER_OPTIONS if getattr(args, name) is not None}
    return ClusterOptions(workers=workers, batch_rows=batch_rows, **given)


def predict_from_args(
    args: argparse.Namespace, params: dict | None, params_name: str, cfg: Any, records: Callable[[], ArtifactRecords]
) -> StreamResult:
    """``rakuten predict --engine ray``: the command's arguments, its stream knobs ``cfg`` (--workers actors,
    --chunk-rows rows per batch) and the artifact records (read once the options are known to be valid)."""
    if args.explain is not None:
        raise PipelineError("--explain runs in one process: leave out --engine ray")
    if args.work_dir is not None:
        raise PipelineError("--work-dir: not with --engine ray (each worker cleans images in a temporary folder)")
    options = cluster_options(args, cfg.workers, cfg.chunk_rows)
    options.check()
    return predict_distributed(
        args.input, args.images, args.output, args.models, params, params_name, options, records()
    )

"""The worker side of ``rakuten predict --engine ray`` (:mod:`rakuten.serving.distributed`): the batches
as they travel, and the Ray actor that scores them.

A batch is a slice of the input CSV's rows in input order, with each row's index and 0-based position;
an actor turns it into catalog rows with ingest's own function (images probed on the worker's node) and
scores it with :meth:`Predictor.predict_rows`, the single-process run's function, so the bytes are the
same. The position travels with every prediction: it is how the driver proves that nothing was lost or
repeated when a dead worker's batch was scored again. An expected failure (a file failing its hash check,
the image folder missing on a node) comes back as a batch holding its one-line message: Ray would hand
the driver the remote traceback, without the exception itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords
from rakuten.core.io import _pid_alive  # one definition: the atomic writes' stale-temporary check
from rakuten.core.logs import setup_logging
from rakuten.data.ingest import catalog_rows
from rakuten.runtime.torch_setup import set_threads
from rakuten.serving.predict import Predictor

POSITION = "_position"  # a row's 0-based position in the input CSV: the order and the loss/duplicate check
INDEX = "_index"  # the input CSV's own index (the output's index)
ERROR = "_error"  # a batch of one row holding this column: the one-line error a worker met (bad input, a hash)
WORK_PREFIX = "rakuten-ray-"  # an actor's temporary folders: rakuten-ray-<pid>-<random>
_WORK_DIR = re.compile(rf"^{WORK_PREFIX}(\d+)-")


@dataclass(frozen=True)
class KillOnce:
    """A failure drill (and the fault-tolerance test): the worker that takes the batch holding row
    ``at_row`` kills its own process with SIGKILL, once; ``marker`` (a path every worker sees) records
    that it happened, so the retried batch goes through."""

    marker: str
    at_row: int

    def __call__(self, positions: np.ndarray) -> None:
        if self.at_row not in positions:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------- batches


def partitions(x: pd.DataFrame, batch_rows: int) -> list[pd.DataFrame]:
    """The input rows (as :func:`read_official_csv` returns them) in batches of ``batch_rows``, in
    order, each row with its index in :data:`INDEX` and its position in :data:`POSITION`."""
    frame = x.reset_index(names=INDEX)
    frame[POSITION] = np.arange(len(frame), dtype=np.int64)
    return [frame.iloc[s : s + batch_rows].reset_index(drop=True) for s in range(0, len(frame), batch_rows)]


def catalog_batch(batch: pd.DataFrame, x_csv: Path, image_dir: Path) -> pd.DataFrame:
    """The catalog rows of one batch, as the single-process run builds them for the whole file
    (``row_id`` continues from the batch's first position)."""
    x = batch.drop(columns=[POSITION]).set_index(INDEX)
    x.index.name = None
    rows, _ = catalog_rows(x, x_csv, image_dir, first_row_id=int(batch[POSITION].iloc[0]))
    return rows


# ------------------------------------------------------------------------------- the actor


def sweep_work_dirs(parent: Path) -> None:
    """Remove the temporary folders of actors whose process is gone (killed: no cleanup ran)."""
    for stale in parent.glob(f"{WORK_PREFIX}*"):
        match = _WORK_DIR.match(stale.name)
        if match and stale.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(stale, ignore_errors=True)


def pack_models(models_dir: Path) -> dict[str, bytes]:
    """Every file under ``models_dir`` by its relative path: what ``ship_models`` puts in the object store."""
    return {p.relative_to(models_dir).as_posix(): p.read_bytes() for p in sorted(models_dir.rglob("*")) if p.is_file()}


def unpack_models(files: dict[str, bytes], root: Path, models_rel: str, records: ArtifactRecords):
    """The shipped files written under ``root`` at the path they have in the project, and the records
    rooted there: :meth:`ArtifactRecords.verify` then checks these bytes against the same dvc.lock."""
    models_dir = root / models_rel
    for rel, data in files.items():
        path = models_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return models_dir, dataclasses.replace(records, root=root.resolve(), checked={})  # hashed anew: new bytes


class BatchScorer:
    """One Ray actor: the models loaded once, then one :meth:`Predictor.predict_rows` per batch.

    Its temporary folders (``rakuten-ray-<pid>-*`` in the node's temporary folder: shipped models until
    they are loaded, each batch's cleaned images until it is scored) are removed as soon as they have
    served, not when the actor ends, which Ray may do with SIGKILL; a folder left by a killed actor is
    removed by the next actor starting on that node."""

    def __init__(
        self,
        x_csv: str,
        image_dir: str,
        models: str | list,
        params: dict | None,
        params_name: str,
        records: ArtifactRecords,
        models_rel: str = "models",
        kill: KillOnce | None = None,
        threads: int = 1,
    ) -> None:
        setup_logging()
        self.x_csv, self.image_dir, self.kill = Path(x_csv), Path(image_dir), kill
        sweep_work_dirs(Path(tempfile.gettempdir()))
        records = dataclasses.replace(records, checked={})  # this node's bytes are hashed here, whatever the driver saw
        self.error: PipelineError | None = None
        try:
            self.predictor = self._load(models, params, params_name, records, models_rel)
        except PipelineError as exc:  # answered to every batch (see ERROR)
            self.error = exc
        set_threads(threads)  # the CPUs Ray reserved for this actor, not the node's cores (same bits)

    def _load(self, models: str | list, params: dict | None, params_name: str, records, models_rel: str) -> Predictor:
        if not self.image_dir.is_dir():
            raise PipelineError(
                f"{self.image_dir}: image folder not found on worker node {socket.gethostname()}; every worker "
                "must see the images at the path the driver was given (a shared folder)"
            )
        if isinstance(models, str):
            return Predictor.load(models, params, params_name, records=records).in_process()
        import ray

        with self._work_dir() as root:  # fetched from the object store once, removed once loaded
            models_dir, records = unpack_models(ray.get(models[0]), Path(root), models_rel, records)
            return Predictor.load(models_dir, params, params_name, records=records).in_process()

    @staticmethod
    def _work_dir() -> tempfile.TemporaryDirectory:
        return tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-")

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if self.error is not None:
            return pd.DataFrame({ERROR: [str(self.error)]})
        positions = batch[POSITION].to_numpy(np.int64)
        try:
            rows = catalog_batch(batch, self.x_csv, self.image_dir)
            with self._work_dir() as work:
                if self.kill is not None:
                    self.kill(positions)
                table = self.predictor.predict_rows(rows, work).table
        except PipelineError as exc:
            return pd.DataFrame({ERROR: [str(exc)]})
        out = table.reset_index(names=INDEX)
        out[POSITION] = positions
        return out

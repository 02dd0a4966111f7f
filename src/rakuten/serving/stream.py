"""``rakuten predict`` on a whole catalog: rows in chunks, chunks over worker processes, the CSV written as it comes.

Why chunks: cleaning, decoded images and the models' activations grow with the rows handled at once; a
chunk bounds them (measured in ``bench/predict.py``), while the output does not depend on the chunking:
every model scores a row from that row alone on CPU (one text per pass, each image's convolutions on
their own, heads applied per row), text and image cleaning are per row, and fusion, calibration and the
review flag are per row. So ``--chunk-rows`` and ``--workers`` are runtime knobs: any value gives the same
bytes (a test checks it).

Why processes: the models run on one core each at full speed, and spaCy's cleaning is Python code that
holds the GIL, so two processes use two cores where two threads would not. Each worker loads (and
verifies) the models once, at start, from the same folder; chunks go to whichever worker is free and
come back in input order, at most two per worker in flight, so memory stays bounded whatever the size
of the file.
"""

from __future__ import annotations

import concurrent.futures as futures
import csv
import functools
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
from tqdm import tqdm

from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords
from rakuten.core.io import atomic_path
from rakuten.core.parallel import process_pool, set_worker_state, worker_state
from rakuten.serving.predict import Prediction, Predictor
from rakuten.serving.predict_options import StreamConfig

log = logging.getLogger(__name__)


@dataclass
class StreamResult:
    """What a streamed run did: rows written, rows per input used, rows sent to review, seconds per part."""

    rows: int = 0
    partial: int = 0
    review: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def chunks(rows: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    """``rows`` in consecutive slices of at most ``size`` rows."""
    for start in range(0, len(rows), size):
        yield rows.iloc[start : start + size]


# ------------------------------------------------------------------------------------------ workers


def _start_worker(models_dir: Path, params: dict | None, params_name: str, lock: Path | None) -> None:
    """A worker's initialiser: load (and verify) the models once; cleaning in this process (one core each).
    The worker's state: the predictor and its own temporary folder (kept, so it lives as long as the worker)."""
    from rakuten.core.logs import setup_logging

    setup_logging()
    records = ArtifactRecords.from_lock(lock) if lock is not None else ArtifactRecords.for_path(models_dir)
    predictor = Predictor.load(models_dir, params, params_name, records=records).in_process()
    set_worker_state((predictor, tempfile.TemporaryDirectory(prefix="rakuten-predict-worker-")))


def _score_chunk(rows: pd.DataFrame) -> pd.DataFrame:
    """One chunk's prediction table, in a worker (cleaned images in the worker's own temporary folder)."""
    predictor, work = worker_state()
    return predictor.predict_rows(rows, work.name).table


def _pool(cfg: StreamConfig, models_dir: Path, params: dict | None, params_name: str, lock: Path | None):
    """``cfg.processes()`` spawned workers (never forks of a process holding torch's threads), each loading the
    models once; they die with this process."""
    start = functools.partial(_start_worker, Path(models_dir), params, params_name, lock)
    return process_pool(cfg.processes(), start, spawn=True)


def tables_in_order(submit: Callable[[pd.DataFrame], futures.Future], parts: Iterator[pd.DataFrame], ahead: int):
    """The results of ``submit(part)`` for every part, in order, with at most ``ahead`` parts in flight."""
    pending: list[futures.Future] = []
    for part in parts:
        pending.append(submit(part))
        if len(pending) >= ahead:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


# --------------------------------------------------------------------------------------------- run


def write_stream(tables: Iterator[pd.DataFrame], output: Path, total: int) -> StreamResult:
    """Append each prediction table to ``output`` (written atomically: a failed run leaves nothing) as
    ``rakuten predict`` has always written it; count what was written."""
    result = StreamResult()
    with atomic_path(output) as tmp, open(tmp, "w", newline="") as handle:
        progress = tqdm(total=total, desc="predict", unit="row", disable=total < 1000)
        for table in tables:
            table.to_csv(handle, index=True, header=result.rows == 0, quoting=csv.QUOTE_MINIMAL)
            result.rows += len(table)
            result.partial += int(table["inputs_used"].str.contains("only|none").sum())
            result.review += int(table["needs_review"].sum())
            progress.update(len(table))
        progress.close()
    return result


def predict_file(
    predictor: Predictor | None,
    rows: pd.DataFrame,
    output: Path,
    work_dir: Path,
    cfg: StreamConfig,
    load: tuple[Path, dict | None, str, Path | None] | None = None,
    on_chunk: Callable[[Prediction], None] | None = None,
) -> StreamResult:
    """Score ``rows`` chunk by chunk and write the prediction CSV to ``output``.

    One worker: in this process with ``predictor`` (``on_chunk`` sees each chunk's :class:`Prediction`,
    for ``--explain``). More: ``load`` = (models folder, params, params name, lock) that each worker loads."""
    start = time.perf_counter()
    parts = chunks(rows, cfg.chunk_rows)
    if cfg.processes() == 1:
        if predictor is None:
            raise ValueError("one worker predicts in this process: pass the loaded predictor")
        predictor.models.image_threads = os.cpu_count() or 1  # the only process: images on every core

        def tables() -> Iterator[pd.DataFrame]:
            for part in parts:
                prediction = predictor.predict_rows(part, work_dir)
                if on_chunk is not None:
                    on_chunk(prediction)
                yield prediction.table

        result = write_stream(tables(), output, len(rows))
    else:
        if load is None or on_chunk is not None:
            raise PipelineError("several workers need the models folder to load, and cannot explain rows")
        with _pool(cfg, *load) as pool:
            tables = tables_in_order(lambda part: pool.submit(_score_chunk, part), parts, 2 * cfg.processes())
            result = write_stream(tables, output, len(rows))
    result.seconds["predict"] = time.perf_counter() - start
    return result

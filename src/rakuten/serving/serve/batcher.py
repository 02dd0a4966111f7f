"""Dynamic batching of single-product requests: those that wait for the model at the same time are
predicted together, in one call of :meth:`Predictor.predict_rows` on their concatenated rows.

Why: most of what one product costs is per call, not per row (the cleaning's set-up, pandas, each
model's fixed overhead and forward pass): on the default models 8 products cost about twice one
(docs/serve.md, "Concurrency"). As NVIDIA Triton's dynamic batcher and TorchServe's ``batch_size`` /
``max_batch_delay`` do, one worker thread owns the model: it takes the oldest waiting request, every
other one already queued, and waits for more until the oldest has waited ``max_batch_delay_s`` or the
batch holds ``max_batch_size`` rows. A batch's rows get the row ids 0..n-1 (the cleaned images are
named after them), each request gets its own rows back with its own ``row_id`` and ``orig_index``.
A batch whose call fails is predicted again request by request, so that each gets its own answer or
its own error. Requests are :class:`concurrent.futures.Future` objects, awaitable from any event loop
(``asyncio.wrap_future``); one cancelled before its batch starts is dropped, never predicted.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from rakuten.core.errors import PipelineError
from rakuten.serving.predict import Prediction

log = logging.getLogger(__package__)  # the service's logger, which run_server rate-limits

PredictRows = Callable[[pd.DataFrame, Path], Prediction]


@dataclass
class Job:
    """One request's catalog rows and the future its :class:`Prediction` is set on."""

    rows: pd.DataFrame
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What the worker did: batches predicted, rows in them, batches that fell back to one by one."""

    batches: int = 0
    rows: int = 0
    fallbacks: int = 0

    def mean_batch_size(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


_STOP = object()


class Batcher:
    """The worker thread that predicts queued :class:`Job` objects in batches of at most
    ``max_batch_size`` rows, waiting at most ``max_batch_delay_s`` after the oldest one arrived.

    Started by the first :meth:`submit`; :meth:`close` predicts what is queued, then stops it (a later
    :meth:`submit` starts a new worker: an app may be started and stopped more than once in tests)."""

    def __init__(self, predict_rows: PredictRows, max_batch_size: int, max_batch_delay_s: float):
        if max_batch_size < 1 or max_batch_delay_s < 0:
            raise PipelineError(
                f"batcher: max_batch_size = {max_batch_size}, max_batch_delay_s = {max_batch_delay_s}; "
                "expected >= 1 and >= 0"
            )
        self.predict_rows, self.max_batch_size, self.max_batch_delay_s = predict_rows, max_batch_size, max_batch_delay_s
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()
        self._held: Job | None = None  # taken from the queue, but it would have made the batch too big
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, rows: pd.DataFrame) -> Future:
        """Queue ``rows`` (one request's catalog rows); the future gets their :class:`Prediction`."""
        if len(rows) == 0:
            raise PipelineError("batcher: a request with no rows")
        job = Job(rows.reset_index(drop=True))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rakuten-batcher", daemon=True)
                self._thread.start()
            self._queue.put(job)
        return job.future

    def describe(self) -> dict:
        """The settings and the counts so far (``GET /health``): a load test reads the mean batch size there."""
        return {
            "max_batch_size": self.max_batch_size,
            "max_batch_delay_ms": round(self.max_batch_delay_s * 1000, 3),
            "batches": self.stats.batches,
            "rows": self.stats.rows,
            "fallbacks": self.stats.fallbacks,
        }

    def close(self, timeout_s: float | None = None) -> None:
        """Predict the requests already queued, then stop the worker (shutdown: nothing is left waiting).
        A :meth:`submit` meanwhile waits: its new worker must not take this one's stop mark."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(_STOP)
                thread.join(timeout_s)

    # ------------------------------------------------------------------------------ the worker

    def _run(self) -> None:
        while True:
            jobs, stop = self._next_batch()
            if jobs:
                try:
                    self._predict(jobs)
                finally:  # whatever stopped the worker, no request waits forever
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(RuntimeError("the batch worker stopped"))
            if stop:
                return

    def _take(self, wait: float | None) -> object | None:
        """The job held back from the last batch, else the next queued item, waiting ``wait`` seconds
        for it (None: as long as it takes; 0 or less: only one already queued); None if none came."""
        if self._held is not None:
            job, self._held = self._held, None
            return job
        try:
            if wait is None:
                return self._queue.get()
            return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _next_batch(self) -> tuple[list[Job], bool]:
        """(the jobs of the next batch, whether the stop mark came). Waits for a first job, then takes
        every job already queued and waits for more until the first one has waited the delay."""
        jobs: list[Job] = []
        size, deadline = 0, None
        while size < self.max_batch_size:
            item = self._take(None if deadline is None else deadline - time.monotonic())
            if item is None:
                break
            if item is _STOP:
                return jobs, True
            job: Job = item  # type: ignore[assignment]
            if jobs and size + len(job.rows) > self.max_batch_size:
                self._held = job  # the first of the next batch
                break
            if not job.future.set_running_or_notify_cancel():
                continue  # its client went away before its batch started
            jobs.append(job)
            size += len(job.rows)
            if deadline is None:
                deadline = job.arrived + self.max_batch_delay_s
        return jobs, False

    def _predict(self, jobs: list[Job]) -> None:
        """One call for the whole batch; if it fails, one call per job, each job its own outcome."""
        self.stats.batches += 1
        self.stats.rows += sum(len(j.rows) for j in jobs)
        try:
            parts = predict_together(self.predict_rows, [j.rows for j in jobs])
        except Exception as exc:  # noqa: BLE001 - any failure: each request gets its own answer or error
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            self.stats.fallbacks += 1
            log.warning(
                "a batch of %d requests failed (%s: %s); predicting them one by one",
                len(jobs),
                type(exc).__name__,
                " ".join(str(exc).split())[:200],
            )
            for job in jobs:
                try:
                    job.future.set_result(predict_together(self.predict_rows, [job.rows])[0])
                except Exception as own:  # noqa: BLE001 - this request's own error
                    job.future.set_exception(own)
            return
        for job, part in zip(jobs, parts):
            job.future.set_result(part)


def predict_together(predict_rows: PredictRows, requests: list[pd.DataFrame]) -> list[Prediction]:
    """Predict the rows of several requests in one call (row ids 0..n-1, in a temporary work folder)
    and split the result back: each request's :class:`Prediction`, its rows with their own ``row_id``."""
    rows = pd.concat(requests, ignore_index=True)
    own_ids = rows["row_id"].to_numpy()
    rows["row_id"] = np.arange(len(rows), dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="rakuten-batch-") as work:
        result = predict_rows(rows, Path(work))
    if len(result.table) != len(rows) or not np.array_equal(result.frame["row_id"].to_numpy(), rows["row_id"]):
        raise PipelineError(f"batch of {len(rows)} rows: the prediction came back with other rows or in another order")
    frame = result.frame.assign(row_id=own_ids)
    parts, start = [], 0
    for request in requests:
        end = start + len(request)
        parts.append(Prediction(frame.iloc[start:end], result.proba[start:end], result.table.iloc[start:end]))
        start = end
    return parts

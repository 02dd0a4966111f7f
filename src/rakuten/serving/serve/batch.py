"""``POST /predict/batch``: a multipart form with ``csv`` (the X_test layout) and ``images`` files named
``image_<imageid>_product_<productid>.jpg``; the prediction CSV of ``rakuten predict`` is streamed
back, chunk by chunk, as each chunk is predicted.

Why streamed: a large batch answers from its first chunk on, and a client that goes away stops the
work (the chunk under way finishes; no further chunk is predicted). The uploads live in a temporary
folder, removed however the response ends, and the model's slot is given back then too.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pandas as pd
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from rakuten.serving.http_guards import RequestError
from rakuten.serving.predict import Predictor
from rakuten.serving.serve.inputs import (
    BATCH_FIELDS,
    batch_image_name,
    batch_rows,
    check_image,
    content_type,
    form_fields,
)
from rakuten.serving.serve.limits import ServeLimits
from rakuten.serving.serve.service import service_of

log = logging.getLogger(__package__)  # the service's logger, which run_server rate-limits


# The route (no docstring: FastAPI would publish it in the OpenAPI schema). Everything is read and
# checked before the request waits for the model; past max_pending waiting requests it is refused (503).
async def predict_batch(request: Request):
    service = service_of(request)
    limits = service.limits
    kind = content_type(request)
    if kind != "multipart/form-data":
        raise RequestError(415, f"content type {kind or 'none'!r}; expected multipart/form-data with csv and images")
    fields, files = await form_fields(
        request, limits, max_files=limits.max_batch_rows + 1, max_bytes=limits.max_batch_mb * 1e6
    )
    unknown = sorted((set(fields) | set(files)) - set(BATCH_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; expected csv and images")
    if "csv" in fields or len(files.get("csv", [])) != 1:
        raise RequestError(422, "csv: expected one CSV file upload in the X_test layout")
    work = tempfile.TemporaryDirectory(prefix="rakuten-serve-")
    try:
        rows = await save_uploads(Path(work.name), files, limits)
        service.gate.enter()
    except BaseException:
        work.cleanup()
        raise

    def release() -> None:
        service.gate.leave()
        work.cleanup()

    return CleanupStreamingResponse(
        stream_predictions(request, service.predictor, rows, Path(work.name), limits.chunk_rows),
        release,
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="predictions.csv"'},
    )


async def save_uploads(root: Path, files: dict[str, list[UploadFile]], limits: ServeLimits) -> pd.DataFrame:
    """The uploaded CSV and images written under ``root`` (each image checked, each name once): the
    batch's catalog rows."""
    (root / "images").mkdir()
    (root / "x.csv").write_bytes(await files["csv"][0].read())
    seen: set[str] = set()
    for upload in files.get("images", []):
        name = batch_image_name(upload.filename)
        if name in seen:  # which of the two would be the row's image is anybody's guess
            raise RequestError(422, f"images: {name} uploaded twice; expected each image file once")
        seen.add(name)
        data = await upload.read()
        check_image(data, f"images: {name}", limits)
        (root / "images" / name).write_bytes(data)
    return batch_rows(root / "x.csv", files["csv"][0].filename or "csv", root / "images", limits)


async def stream_predictions(
    request: Request, predictor: Predictor, rows: pd.DataFrame, root: Path, chunk_rows: int
) -> AsyncIterator[str]:
    """One CSV chunk per ``chunk_rows`` rows. A client gone is noticed before each chunk (and by
    Starlette's disconnect listener, which cancels at the next await): the rest is not predicted."""

    def predict_chunk(start: int) -> pd.DataFrame:
        return predictor.predict_rows(rows.iloc[start : start + chunk_rows], root / f"work_{start}").table

    sent, failed = 0, False
    try:
        for start in range(0, len(rows), chunk_rows):
            if await request.is_disconnected():
                break
            table = await run_in_threadpool(predict_chunk, start)  # a chunk under way finishes first
            yield csv_chunk(table, header=start == 0)
            sent = start + len(table)
    except Exception:
        failed = True
        log.exception("batch prediction failed; the response is cut short")
        raise
    finally:
        if sent < len(rows) and not failed:
            log.info("batch: the client went away after %d of %d rows; the rest is not predicted", sent, len(rows))


def csv_chunk(table: pd.DataFrame, header: bool) -> str:
    """Rows of the prediction CSV, written as ``rakuten predict`` writes its file."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=True, header=header, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    return buffer.getvalue()


class CleanupStreamingResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` once it ends, however it ends (sent, client gone,
    failed): the generator's own ``finally`` does not run when the response never starts iterating."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kwargs: Any):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # its finally (the log line) now, not at garbage collection
            finally:
                self._on_close()

"""``POST /predict``: one product, as JSON ``{"designation", "description", "explain"}`` or as a
multipart form with the same fields and an optional ``image`` file; answered with exactly what
``rakuten predict`` computes for it (the same catalog row, cleaning and fused models).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from rakuten.contracts.classes import CLASS_LABELS
from rakuten.data.ingest import catalog_rows
from rakuten.serving.http_guards import RequestError
from rakuten.serving.predict import Predictor
from rakuten.serving.serve.batcher import Batcher
from rakuten.serving.serve.inputs import check_image, content_type, form_fields, parse_json_body, single_product
from rakuten.serving.serve.limits import ServeLimits
from rakuten.serving.serve.service import service_of


# The route (no docstring: FastAPI would publish it in the OpenAPI schema). The fields are checked
# before the request waits for the model; past max_pending waiting requests it is refused (503).
async def predict(request: Request):
    service = service_of(request)
    limits = service.limits
    kind = content_type(request)
    image: bytes | None = None
    if kind == "application/json":
        fields = await json_fields(request, limits)
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields, image = await form_fields_and_image(request, limits)
    else:
        raise RequestError(415, f"content type {kind or 'none'!r}; expected application/json or multipart/form-data")
    designation, description, explain = single_product(fields, image is not None, limits)
    if image is not None:
        check_image(image, "image", limits)
    service.gate.enter()
    try:
        if service.batcher is None or explain:  # explanations take the predictor's lock, one at a time
            return await run_in_threadpool(predict_one, service.predictor, designation, description, image, explain)
        return await predict_batched(service.batcher, designation, description, image)
    finally:
        service.gate.leave()


async def json_fields(request: Request, limits: ServeLimits) -> dict[str, Any]:
    """The fields of a JSON body, read with a bound: a body without a length cannot grow memory."""
    limit = 4 * limits.max_text_chars + 64_000  # UTF-8 and JSON escapes of the longest accepted text
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > limit:
            raise RequestError(
                413,
                f"JSON body larger than {limit} bytes; the text limit is {limits.max_text_chars} characters",
            )
    body = parse_json_body(bytes(raw))
    if not isinstance(body, dict):
        raise RequestError(422, "body: expected a JSON object with designation, description")
    if "image" in body:
        raise RequestError(422, "image: send the image as a multipart/form-data upload, not in JSON")
    return body


async def form_fields_and_image(request: Request, limits: ServeLimits) -> tuple[dict[str, Any], bytes | None]:
    """The text fields of a form and its ``image`` upload (None without one)."""
    fields, files = await form_fields(request, limits, max_files=1, max_bytes=limits.max_image_mb * 1e6 + 1e6)
    extra = sorted(set(files) - {"image"})
    if extra:
        raise RequestError(422, f"unknown file field {extra[0]!r}; expected image")
    if not files.get("image"):
        return fields, None
    upload = files["image"][0]
    image = await upload.read()
    if not image and not upload.filename:
        return fields, None  # an empty file input of a browser form: no image
    return fields, image


def one_row(designation: str, description: str) -> pd.DataFrame:
    """The X_test-layout row of a single product (productid and imageid 0: its image, if any, is
    ``image_0_product_0.jpg``)."""
    return pd.DataFrame(
        {"designation": [designation], "description": [description or None], "productid": ["0"], "imageid": ["0"]},
        index=pd.Index([0]),
    )


def top_classes(table_row: pd.Series, k: int = 3) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of a prediction-table row: code, label, probability."""
    return [
        {
            "code": int(table_row[f"top{j}_code"]),
            "label": CLASS_LABELS[int(table_row[f"top{j}_code"])],
            "proba": float(table_row[f"top{j}_proba"]),
        }
        for j in range(1, k + 1)
    ]


def request_rows(designation: str, description: str, image: bytes | None, folder: Path) -> pd.DataFrame:
    """The catalog row of one product, its image (if any) written under ``folder`` as
    ``images/image_0_product_0.jpg``."""
    images = folder / "images"
    images.mkdir()
    if image is not None:
        (images / "image_0_product_0.jpg").write_bytes(image)
    rows, _ = catalog_rows(one_row(designation, description), Path("request"), images)
    return rows


def answer(table_row: pd.Series) -> dict[str, Any]:
    """The JSON answer for one row of the prediction table: predicted class, top 3 (calibrated
    probabilities), inputs used, whether it needs a human review."""
    return {
        "prdtypecode": int(table_row["prdtypecode"]),
        "label": str(table_row["label"]),
        "top": top_classes(table_row),
        "inputs_used": str(table_row["inputs_used"]),
        "needs_review": bool(table_row["needs_review"]),
    }


def predict_one(
    predictor: Predictor, designation: str, description: str, image: bytes | None, explain: bool
) -> dict[str, Any]:
    """The JSON answer for one product predicted on its own (:func:`answer`), explanations if asked."""
    with tempfile.TemporaryDirectory(prefix="rakuten-serve-") as tmp:
        rows = request_rows(designation, description, image, Path(tmp))
        result = predictor.predict_rows(rows, Path(tmp) / "work")
        out = answer(result.table.iloc[0])
        if explain:
            index = int(np.argmax(result.proba[0]))
            out["explanations"] = predictor.explain(result.frame.iloc[0], index)
    return out


async def predict_batched(batcher: Batcher, designation: str, description: str, image: bytes | None) -> dict:
    """The JSON answer for one product predicted in a batch with the requests waiting at the same time
    (:mod:`~rakuten.serving.serve.batcher`). Its upload folder lives until its batch is done, even if
    the request is given up first; it is removed here, not by the batcher's thread, which the model's
    throughput hangs on."""
    work = tempfile.TemporaryDirectory(prefix="rakuten-serve-")
    try:
        rows = await run_in_threadpool(request_rows, designation, description, image, Path(work.name))
        future = batcher.submit(rows)
    except BaseException:
        work.cleanup()
        raise
    try:
        result = await asyncio.wrap_future(future)
    finally:
        if future.done():
            work.cleanup()
        else:  # given up while its batch runs: the folder goes once the batch is done with it
            future.add_done_callback(lambda _: work.cleanup())
    return answer(result.table.iloc[0])

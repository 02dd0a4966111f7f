"""``POST /predict``: one product, as JSON ``{"designation", "description", "explain"}`` or as a
multipart form with the same fields and an optional ``image`` file; answered with exactly what
``rakuten predict`` computes for it (the same catalog row, cleaning and fused models).
"""

from __future__ import annotations

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
        return await run_in_threadpool(predict_one, service.predictor, designation, description, image, explain)
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


def predict_one(
    predictor: Predictor, designation: str, description: str, image: bytes | None, explain: bool
) -> dict[str, Any]:
    """The JSON answer for one product: predicted class, top 3 (calibrated probabilities), inputs used,
    whether it needs a human review, explanations if asked."""
    with tempfile.TemporaryDirectory(prefix="rakuten-serve-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        if image is not None:
            (images / "image_0_product_0.jpg").write_bytes(image)
        rows, _ = catalog_rows(one_row(designation, description), Path("request"), images)
        result = predictor.predict_rows(rows, Path(tmp) / "work")
        row = result.table.iloc[0]
        answer: dict[str, Any] = {
            "prdtypecode": int(row["prdtypecode"]),
            "label": str(row["label"]),
            "top": top_classes(row),
            "inputs_used": str(row["inputs_used"]),
            "needs_review": bool(row["needs_review"]),
        }
        if explain:
            index = int(np.argmax(result.proba[0]))
            answer["explanations"] = predictor.explain(result.frame.iloc[0], index)
    return answer

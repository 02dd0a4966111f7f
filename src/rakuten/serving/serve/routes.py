"""The read-only routes: the web page, ``/health`` (with the batcher's counts), ``/metadata`` and ``/docs``.

Each is a plain function of the request; :func:`~rakuten.serving.serve.app.create_app` registers it
for GET and HEAD. Their names are the operation ids of the OpenAPI schema, and they carry no
docstring: FastAPI would publish it there.
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse
from starlette.requests import Request

from rakuten.serving.serve.page import docs_html
from rakuten.serving.serve.service import service_of


def index(request: Request) -> HTMLResponse:
    service = service_of(request)
    return HTMLResponse(service.page, headers={"content-security-policy": service.page_csp})


def health(request: Request) -> dict:
    service = service_of(request)
    predictor, batcher = service.predictor, service.batcher
    return {
        "status": "ok",
        "models": list(predictor.models.members),
        "strategy": predictor.models.fused.strategy,
        "batching": None if batcher is None else batcher.describe(),
    }


def metadata_endpoint(request: Request) -> dict:
    return service_of(request).metadata


def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(docs_html(request.app.openapi()))

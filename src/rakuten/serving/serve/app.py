"""The FastAPI application: the routes of :mod:`~rakuten.serving.serve.routes`,
:mod:`~rakuten.serving.serve.single` and :mod:`~rakuten.serving.serve.batch`, the error handlers of
:mod:`~rakuten.serving.serve.errors`, and :class:`~rakuten.serving.http_guards.Guard` outside it all.

Requests are accepted concurrently (FastAPI's thread pool); single products waiting at the same time
are predicted together (:mod:`~rakuten.serving.serve.batcher`, ``max_batch_size`` > 1), explanations
and batch CSVs one call at a time (the predictor's lock); past :attr:`ServeLimits.max_pending`
waiting requests the service answers 503.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from rakuten.serving.http_guards import Guard
from rakuten.serving.predict import Predictor
from rakuten.serving.serve import batch, routes, single
from rakuten.serving.serve.batcher import Batcher
from rakuten.serving.serve.errors import add_error_handlers
from rakuten.serving.serve.limits import ServeLimits
from rakuten.serving.serve.metadata import model_metadata
from rakuten.serving.serve.page import page_csp, page_html
from rakuten.serving.serve.service import Gate, Service

log = logging.getLogger(__package__)  # the service's logger, which run_server rate-limits


class GuardedApp(FastAPI):
    """FastAPI with :class:`Guard` outside its middleware stack (``create_app`` sets ``guard``), so that
    the guard sees every response, those of FastAPI's own error middleware included."""

    guard: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return self.guard(stack) if self.guard is not None else stack


def create_app(predictor: Predictor, limits: ServeLimits | None = None, metadata: dict | None = None) -> GuardedApp:
    """The FastAPI application serving ``predictor`` (loaded once, shared by every request), within
    ``limits`` (default: the declared defaults); ``metadata`` is what ``GET /metadata`` answers."""
    limits = limits if limits is not None else ServeLimits()
    app = GuardedApp(
        title="Rakuten product classification", version="1", docs_url=None, redoc_url=None, lifespan=lifespan
    )
    single_limit = limits.max_image_mb * 1e6 + 1e6  # the image and the text fields of one product
    app.guard = lambda inner: Guard(
        inner,
        {"/predict": single_limit, "/predict/batch": limits.max_batch_mb * 1e6},
        default_limit=1e6,
        body_timeout_s=limits.body_timeout_s,
    )
    page = page_html()
    batcher = None
    if limits.max_batch_size > 1:
        batcher = Batcher(predictor.predict_rows, limits.max_batch_size, limits.max_batch_delay_ms / 1000)
    app.state.service = Service(
        predictor=predictor,
        limits=limits,
        gate=Gate(limits.max_pending),
        metadata=metadata if metadata is not None else model_metadata(predictor, None),
        page=page,
        page_csp=page_csp(page),
        batcher=batcher,
    )
    add_error_handlers(app)
    get_and_head(app, "/", routes.index, response_class=HTMLResponse)
    get_and_head(app, "/health", routes.health)
    get_and_head(app, "/metadata", routes.metadata_endpoint)
    get_and_head(app, "/docs", routes.docs, response_class=HTMLResponse, include_in_schema=False)
    app.post("/predict")(single.predict)
    app.post("/predict/batch")(batch.predict_batch)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At shutdown (uvicorn has finished the requests under way), the batcher predicts what is still
    queued and its worker stops."""
    yield
    batcher = app.state.service.batcher
    if batcher is not None:
        await run_in_threadpool(batcher.close)
        stats = batcher.stats
        log.info(
            "batching stopped: %d requests in %d batches (%.2f a batch), %d batch(es) predicted one by one",
            stats.rows,
            stats.batches,
            stats.mean_batch_size(),
            stats.fallbacks,
        )


def get_and_head(app: FastAPI, path: str, endpoint: Callable, **kwargs: Any) -> None:
    """A GET route that answers HEAD too (same headers, no body), as HTTP expects of GET; the HEAD
    twin stays out of the OpenAPI schema (one route with both methods would repeat its operation id)."""
    app.get(path, **kwargs)(endpoint)
    app.head(path, **{**kwargs, "include_in_schema": False})(endpoint)

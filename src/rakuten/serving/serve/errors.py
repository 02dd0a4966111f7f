"""How the service answers what went wrong: one JSON line ``{"error": "..."}``, a 4xx naming the field
for a client's mistake, a 500 (logged, the server keeps serving) for anything unexpected.

Why its own module: every failure of every route goes through these handlers, so one place decides
that an error stays one line and that a client's mistake never puts a traceback in the log.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Match

from rakuten.core.errors import PipelineError
from rakuten.serving.http_guards import RequestError

log = logging.getLogger(__package__)  # the service's logger, which run_server rate-limits


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one-line JSON error answer (whitespace folded; text the client sent cannot break the line)."""
    line = " ".join(str(message).split()).encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": line}, status_code=status, headers=headers)


async def request_error(request: Request, exc: RequestError) -> JSONResponse:
    return error(exc.status, exc.message)


async def pipeline_error(request: Request, exc: PipelineError) -> JSONResponse:
    return error(422, str(exc))


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own 404 and 405; a 405's Allow names every method of the path (Starlette's names the
    first matching route's only)."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = {
            m
            for route in request.app.router.routes
            if route.matches(request.scope)[0] != Match.NONE
            for m in getattr(route, "methods", None) or ()
        }
        headers["Allow"] = ", ".join(sorted(allowed))
    return error(exc.status_code, exc.detail, headers=headers)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    log.info("%s %s: the client went away before sending the whole body", request.method, request.url.path)
    return Response(status_code=400)  # nobody reads it: the connection is gone


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error(422, f"{where}: {first.get('msg', 'invalid request')}")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected failure on %s %s", request.method, request.url.path)
    return error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers, in the order the service always had them."""
    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(PipelineError, pipeline_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)

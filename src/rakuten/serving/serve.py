"""``rakuten serve``: the trained pipeline as an HTTP service (FastAPI), with a web page to try it.

Why a service: a model people cannot try is a model they do not trust. The service answers with
exactly what ``rakuten predict`` computes: it builds catalog rows with ingest's own function, cleans
them as the models were trained (:class:`rakuten.serving.predict.Predictor`, loaded once at start) and fuses
the same models. Endpoints:

- ``GET /``: the web page (``rakuten/serving/static/index.html``, plain HTML + JS);
- ``POST /predict``: one product, JSON ``{"designation", "description", "explain"}`` or a multipart
  form with the same fields and an optional ``image`` file;
- ``POST /predict/batch``: a multipart form with ``csv`` (the X_test layout) and ``images`` files named
  ``image_<imageid>_product_<productid>.jpg``; the prediction CSV of ``rakuten predict`` is streamed
  back, chunk by chunk, as each chunk is predicted;
- ``GET /health``, ``GET /metadata`` (artifacts and their DVC hashes, the fused strategy, the params
  the models were trained with).

Every bad request gets a 4xx with one JSON line ``{"error": "..."}`` naming the field and what was
expected; an unexpected failure is a 500 with one line, logged, and the server keeps serving.
Requests are accepted concurrently (FastAPI's thread pool) and predicted one at a time (the
predictor's lock); past :attr:`ServeLimits.max_pending` waiting requests the service answers 503.

What a hostile client can cost is bounded too (docs/serve.md, "Resource limits"; :mod:`rakuten.serving.http_guards`):
bodies are counted as they stream (413, 408 on a stall), connections are capped and must send their
headers in time, the file limit is raised and fits the cap, and repeated warnings are rate-limited.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import logging
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS
from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords
from rakuten.data.ingest import X_COLUMNS, catalog_rows
from rakuten.serving.http_guards import Guard, RequestError, run_server
from rakuten.serving.predict import Predictor, trained_model_dir

log = logging.getLogger(__name__)

IMAGE_NAME = re.compile(r"image_(\d+)_product_(\d+)\.jpg")
SINGLE_FIELDS = ("designation", "description", "explain", "image")
BATCH_FIELDS = ("csv", "images")
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


def _limit(default: float | int, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost. Each field is also a ``rakuten serve`` option, ``--max-image-mb``
    and so on, with its help text here (one declaration per knob)."""

    max_image_mb: float = _limit(10.0, "largest accepted image upload, in MB (413 above)")
    max_image_pixels: int = _limit(
        40_000_000, "largest accepted decoded image, width x height (413 above; guards against decompression bombs)"
    )
    max_text_chars: int = _limit(100_000, "longest accepted designation + description, in characters (413 above)")
    max_batch_rows: int = _limit(10_000, "most rows accepted in one batch CSV (413 above)")
    max_batch_mb: float = _limit(500.0, "largest accepted batch request, CSV + images, in MB (413 above)")
    chunk_rows: int = _limit(256, "batch rows predicted, then streamed back, per chunk")
    max_pending: int = _limit(32, "requests allowed to wait for the model; more get 503 (busy)")
    max_connections: int = _limit(
        1000,
        "most open connections; past it the oldest ones still waiting for their "
        "request headers are closed (new ones at once past it + one accept batch)",
    )
    header_timeout_s: float = _limit(
        10.0, "seconds a connection may take to send its request headers; then it is closed"
    )
    body_timeout_s: float = _limit(
        30.0, "seconds a request body may stall between two reads; then 408 and the connection is closed"
    )
    keep_alive_s: float = _limit(5.0, "seconds an idle keep-alive connection stays open")
    log_every_s: float = _limit(
        10.0,
        "the same server warning (accept errors, bad HTTP, clients gone) is "
        "logged at most once per this many seconds, with a count",
    )

    def __post_init__(self) -> None:
        for f in dataclass_fields(self):
            if not getattr(self, f.name) > 0:
                raise PipelineError(
                    f"--{f.name.replace('_', '-')}: {getattr(self, f.name)}, expected a positive number"
                )


# --------------------------------------------------------------------------------------- metadata


def model_metadata(predictor: Predictor, records: ArtifactRecords | None) -> dict[str, Any]:
    """What is served: the fused strategy, each model's folder with the hash computed from the served
    files when they were loaded (checked against ``records``, the dvc.lock: ``verified`` true) and the
    params its stage ran with, the cleaning it was trained with, the classes."""
    models = predictor.models
    artifacts = []
    for name, modality in [*zip(models.fused.models, models.fused.modalities), ("fusion", "fusion")]:
        folder = trained_model_dir(models.models_dir, name)
        found = records.recorded(folder) if records is not None else None
        stage, out = found if found is not None else (None, None)
        served = models.hashes.get(name)
        params = (records.stages[stage].get("params") or {}) if stage else {}
        artifacts.append(
            {
                "name": name,
                "modality": modality,
                "path": (records.key(folder) if records is not None else None) or str(folder.resolve()),
                "md5": served,
                "verified": bool(out) and served is not None and served == out.get("md5"),
                "dvc": (
                    {"stage": stage, "md5": out.get("md5"), "size": out.get("size"), "nfiles": out.get("nfiles")}
                    if out
                    else None
                ),
                "params": {file: values for file, values in params.items()},
            }
        )
    return {
        "strategy": models.fused.strategy,
        "models": artifacts,
        "lock_file": str(records.lock) if records is not None else None,
        "preprocessing": {section: _plain(cfg) for section, cfg in predictor.sections.items()},
        "classes": [{"code": int(c), "label": CLASS_LABELS[int(c)]} for c in CLASS_CODES],
    }


def _plain(cfg: Any) -> Any:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str)) if dataclasses.is_dataclass(cfg) else cfg


# ------------------------------------------------------------------------------------ validation


def check_image(data: bytes, field: str, limits: ServeLimits) -> None:
    """An upload the pipeline can read: size, format and decoded size within the limits."""
    if len(data) == 0:
        raise RequestError(422, f"{field}: empty file; expected an image")
    if len(data) > limits.max_image_mb * 1e6:
        raise RequestError(413, f"{field}: {len(data) / 1e6:.1f} MB, larger than the {limits.max_image_mb:g} MB limit")
    try:
        with warnings.catch_warnings():
            # PIL's own bomb guard (a warning, an error past twice its limit) fires in Image.open, before
            # our pixel check could: both are the 413 of an oversized image, not an unreadable one
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
                if w * h > limits.max_image_pixels:
                    raise RequestError(413, f"{field}: {w}x{h} pixels, more than the {limits.max_image_pixels} limit")
                img.verify()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(
            413,
            f"{field}: {_one_line(exc)}; more than the {limits.max_image_pixels} pixels limit (a decompression bomb?)",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError(415, f"{field}: not a readable image; expected a JPEG, PNG or WebP file") from None
    if fmt not in IMAGE_FORMATS:
        raise RequestError(415, f"{field}: {fmt} image; expected one of {', '.join(IMAGE_FORMATS)}")


def _one_line(value: Any, width: int = 120) -> str:
    """``value`` as one short line: an error message must stay one line whatever the client sent."""
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(422, f"{field}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")  # JSON's \ud800 escapes decode to lone surrogates, which no later step can write
    except UnicodeEncodeError as exc:
        raise RequestError(
            400, f"{field}: lone surrogate {value[exc.start]!r} at character {exc.start}; expected valid Unicode text"
        ) from None
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook: a key given twice is refused (JSON parsers disagree on which wins)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise RequestError(422, f"{key!r}: given twice in the JSON body; expected each field once")
        found[key] = value
    return found


def parse_json_body(raw: bytes) -> Any:
    """The JSON body of ``POST /predict``: 400 for what is not JSON (or nested past the parser's
    recursion limit), 422 for a duplicate key; never an unexpected 500."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError(400, "body: not valid JSON; expected an object with designation, description") from None
    except RecursionError:
        raise RequestError(
            400, "body: JSON nested too deeply; expected a flat object with designation, description"
        ) from None


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return False
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise RequestError(422, f"{field}: expected true or false, got {_one_line(repr(value), 60)}")


def single_product(fields: dict[str, Any], has_image: bool, limits: ServeLimits) -> tuple[str, str, bool]:
    """(designation, description, explain) of a single-product request, checked."""
    unknown = sorted(set(fields) - set(SINGLE_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; expected {', '.join(SINGLE_FIELDS)}")
    designation = _text(fields.get("designation"), "designation")
    description = _text(fields.get("description"), "description")
    if len(designation) + len(description) > limits.max_text_chars:
        raise RequestError(
            413,
            f"designation + description: {len(designation) + len(description)} characters, "
            f"more than the {limits.max_text_chars} limit",
        )
    if not designation.strip() and not description.strip() and not has_image:
        raise RequestError(422, "no input: give a designation, a description or an image")
    return designation, description, _flag(fields.get("explain"), "explain")


def one_row(designation: str, description: str) -> pd.DataFrame:
    """The X_test-layout row of a single product (productid and imageid 0: its image, if any, is
    ``image_0_product_0.jpg``)."""
    return pd.DataFrame(
        {"designation": [designation], "description": [description or None], "productid": ["0"], "imageid": ["0"]},
        index=pd.Index([0]),
    )


def top_classes(table_row: pd.Series, k: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "code": int(table_row[f"top{j}_code"]),
            "label": CLASS_LABELS[int(table_row[f"top{j}_code"])],
            "proba": float(table_row[f"top{j}_proba"]),
        }
        for j in range(1, k + 1)
    ]


def batch_image_name(filename: str | None) -> str:
    """The file name of a batch image, which must follow the X_test layout's pattern."""
    name = Path(filename or "").name
    if not IMAGE_NAME.fullmatch(name):
        raise RequestError(422, f"images: file name {filename!r}; expected image_<imageid>_product_<productid>.jpg")
    return name


def csv_chunks(table: pd.DataFrame, header: bool) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=True, header=header, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- app


class Gate:
    """Counts requests waiting for or using the model; past ``limit`` the next one is refused (503)."""

    def __init__(self, limit: int):
        self.limit, self.count, self._lock = limit, 0, threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.count >= self.limit:
                raise RequestError(503, f"busy: {self.count} requests already waiting; retry later")
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


def page_html() -> str:
    """The web page shipped in the package (``rakuten/serving/static/index.html``)."""
    return resources.files("rakuten.serving").joinpath("static/index.html").read_text(encoding="utf-8")


def page_csp(page: str) -> str:
    """The web page's Content-Security-Policy: its own inline script and style (by hash, so no other
    inline code runs), images from data: (Grad-CAM) and blob: (the photo's preview), fetch to itself."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    script, style = hashes("script") or "'none'", hashes("style") or "'none'"
    return (
        f"default-src 'none'; script-src {script}; style-src {style}; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def docs_html(openapi: dict) -> str:
    """``/docs``: the endpoints listed from the OpenAPI schema, with a link to ``/openapi.json``. No
    script: FastAPI's Swagger page loads its JS from a CDN, unpinned, which this service must not run."""
    rows = []
    for path, operations in openapi.get("paths", {}).items():
        for method, op in operations.items():
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}</code>"
                f"</td><td>{html.escape(op.get('summary') or op.get('description') or '')}</td></tr>"
            )
    title = html.escape(openapi.get("info", {}).get("title", "API"))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}: API</title></head><body>'
        f'<h1>{title}</h1><p>The OpenAPI schema: <a href="openapi.json">openapi.json</a> (open it in any '
        "OpenAPI viewer). Usage and limits: docs/serve.md.</p><table><tr><th>method</th><th>path</th>"
        f"<th>summary</th></tr>{''.join(rows)}</table></body></html>"
    )


class _GuardedApp(FastAPI):
    """FastAPI with :class:`Guard` outside its middleware stack (``create_app`` sets ``guard``)."""

    guard: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return self.guard(stack) if self.guard is not None else stack


class _CleanupStreamingResponse(StreamingResponse):
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


def create_app(predictor: Predictor, limits: ServeLimits = ServeLimits(), metadata: dict | None = None):
    """The FastAPI application serving ``predictor`` (loaded once, shared by every request)."""
    app = _GuardedApp(title="Rakuten product classification", version="1", docs_url=None, redoc_url=None)
    single_limit = limits.max_image_mb * 1e6 + 1e6  # the image and the text fields of one product
    app.guard = lambda inner: Guard(
        inner,
        {"/predict": single_limit, "/predict/batch": limits.max_batch_mb * 1e6},
        default_limit=1e6,
        body_timeout_s=limits.body_timeout_s,
    )
    gate = Gate(limits.max_pending)
    meta = metadata if metadata is not None else model_metadata(predictor, None)
    index_page = page_html()
    index_csp = page_csp(index_page)

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        line = " ".join(str(message).split()).encode("utf-8", "backslashreplace").decode("utf-8")
        return JSONResponse({"error": line}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error(exc.status, exc.message)

    @app.exception_handler(PipelineError)
    async def _pipeline_error(request, exc: PipelineError):
        return error(422, str(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette's Allow names the first route's methods; the path may have more
            allowed = {
                m
                for route in app.router.routes
                if route.matches(request.scope)[0] != Match.NONE
                for m in getattr(route, "methods", None) or ()
            }
            headers["Allow"] = ", ".join(sorted(allowed))
        return error(exc.status_code, exc.detail, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request, exc: ClientDisconnect):
        log.info("%s %s: the client went away before sending the whole body", request.method, request.url.path)
        return Response(status_code=400)  # nobody reads it: the connection is gone

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    async def form_fields(request: Request, max_files: int, max_bytes: float) -> tuple[dict, dict[str, list]]:
        """Text fields and uploads of a multipart/urlencoded form: refused at once past ``max_bytes`` by its
        length header, else while it streams (:class:`Guard` counts the bytes as the parser reads them)."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise RequestError(
                413, f"request body of {int(length) / 1e6:.1f} MB, larger than the {max_bytes / 1e6:g} MB limit"
            )
        try:
            form = await request.form(
                max_files=max_files, max_fields=64, max_part_size=int(limits.max_image_mb * 1e6) + 1
            )
        except (RequestError, ClientDisconnect):  # over the limit, stalled, or gone while streaming
            raise
        except HTTPException as exc:
            raise RequestError(413 if "size" in str(exc.detail).lower() else 400, f"form: {exc.detail}") from None
        except Exception as exc:  # malformed multipart body
            raise RequestError(400, f"form: cannot parse the multipart body ({type(exc).__name__})") from None
        fields: dict[str, Any] = {}
        files: dict[str, list] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.setdefault(key, []).append(value)
            elif key in fields:
                raise RequestError(422, f"{key}: given twice")
            else:
                fields[key] = value
        return fields, files

    def get_and_head(path: str, **kwargs: Any) -> Callable:
        """A GET route that answers HEAD too (same headers, no body), as HTTP expects of GET; the HEAD
        twin stays out of the OpenAPI schema (one route with both methods would repeat its operation id)."""

        def register(endpoint: Callable) -> Callable:
            app.get(path, **kwargs)(endpoint)
            app.head(path, **{**kwargs, "include_in_schema": False})(endpoint)
            return endpoint

        return register

    @get_and_head("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(index_page, headers={"content-security-policy": index_csp})

    @get_and_head("/health")
    def health() -> dict:
        return {"status": "ok", "models": list(predictor.models.members), "strategy": predictor.models.fused.strategy}

    @get_and_head("/metadata")
    def metadata_endpoint() -> dict:
        return meta

    @get_and_head("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_html(app.openapi()))

    @app.post("/predict")
    async def predict(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        image: bytes | None = None
        if kind == "application/json":
            limit = 4 * limits.max_text_chars + 64_000  # UTF-8 and JSON escapes of the longest accepted text
            raw = bytearray()
            async for chunk in request.stream():  # read with a bound: a body without a length cannot grow memory
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
            fields = body
        elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            fields, files = await form_fields(request, max_files=1, max_bytes=limits.max_image_mb * 1e6 + 1e6)
            extra = sorted(set(files) - {"image"})
            if extra:
                raise RequestError(422, f"unknown file field {extra[0]!r}; expected image")
            if files.get("image"):
                upload = files["image"][0]
                image = await upload.read()
                if not image and not upload.filename:
                    image = None  # an empty file input of a browser form: no image
        else:
            raise RequestError(
                415, f"content type {kind or 'none'!r}; expected application/json or multipart/form-data"
            )
        designation, description, explain = single_product(fields, image is not None, limits)
        if image is not None:
            check_image(image, "image", limits)
        gate.enter()
        try:
            return await run_in_threadpool(_predict_one, predictor, designation, description, image, explain)
        finally:
            gate.leave()

    @app.post("/predict/batch")
    async def predict_batch(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise RequestError(
                415, f"content type {kind or 'none'!r}; expected multipart/form-data with csv and images"
            )
        fields, files = await form_fields(
            request, max_files=limits.max_batch_rows + 1, max_bytes=limits.max_batch_mb * 1e6
        )
        unknown = sorted((set(fields) | set(files)) - set(BATCH_FIELDS))
        if unknown:
            raise RequestError(422, f"unknown field {unknown[0]!r}; expected csv and images")
        if "csv" in fields or len(files.get("csv", [])) != 1:
            raise RequestError(422, "csv: expected one CSV file upload in the X_test layout")
        work = tempfile.TemporaryDirectory(prefix="rakuten-serve-")
        try:
            root = Path(work.name)
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
            rows = _batch_rows(root / "x.csv", files["csv"][0].filename or "csv", root / "images", limits)
        except BaseException:
            work.cleanup()
            raise
        try:
            gate.enter()
        except RequestError:
            work.cleanup()
            raise

        def predict_chunk(start: int) -> pd.DataFrame:
            return predictor.predict_rows(rows.iloc[start : start + limits.chunk_rows], root / f"work_{start}").table

        async def stream() -> AsyncIterator[str]:
            """One CSV chunk per ``chunk_rows`` rows. A client gone is noticed before each chunk (and by
            Starlette's disconnect listener, which cancels at the next await): the rest is not predicted."""
            sent, failed = 0, False
            try:
                for start in range(0, len(rows), limits.chunk_rows):
                    if await request.is_disconnected():
                        break
                    table = await run_in_threadpool(predict_chunk, start)  # a chunk under way finishes first
                    yield csv_chunks(table, header=start == 0)
                    sent = start + len(table)
            except Exception:
                failed = True
                log.exception("batch prediction failed; the response is cut short")
                raise
            finally:
                if sent < len(rows) and not failed:
                    log.info(
                        "batch: the client went away after %d of %d rows; the rest is not predicted", sent, len(rows)
                    )

        def release() -> None:
            gate.leave()
            work.cleanup()

        return _CleanupStreamingResponse(
            stream(),
            release,
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="predictions.csv"'},
        )

    return app


def _batch_rows(x_path: Path, name: str, image_dir: Path, limits: ServeLimits) -> pd.DataFrame:
    """Catalog rows of an uploaded batch CSV; errors name the uploaded file, not the temporary copy."""
    from rakuten.data.ingest import read_official_csv

    try:
        x = read_official_csv(x_path, X_COLUMNS)
        if len(x) == 0:
            raise PipelineError(f"{x_path}: no rows to classify")
        if len(x) > limits.max_batch_rows:
            raise RequestError(413, f"csv: {len(x)} rows, more than the {limits.max_batch_rows} limit")
        chars = x["designation"].fillna("").str.len() + x["description"].fillna("").str.len()
        over = np.flatnonzero(chars.to_numpy() > limits.max_text_chars)
        if len(over):  # the single-product text limit holds for every row of a batch too
            at = int(over[0])
            raise RequestError(
                413,
                f"csv {name}: data row {at + 1} (index {x.index[at]}): designation + description: "
                f"{int(chars.iloc[at])} characters, more than the {limits.max_text_chars} limit",
            )
        rows, _ = catalog_rows(x, x_path, image_dir)
    except PipelineError as exc:
        raise RequestError(422, str(exc).replace(str(x_path), f"csv {name}")) from None
    return rows


def _predict_one(
    predictor: Predictor, designation: str, description: str, image: bytes | None, explain: bool
) -> dict[str, Any]:
    """The JSON answer for one product: predicted class, top 3, inputs used, explanations if asked."""
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
        }
        if explain:
            index = int(np.argmax(result.proba[0]))
            answer["explanations"] = predictor.explain(result.frame.iloc[0], index)
    return answer


def serve(
    models_dir: Path,
    params: dict | None,
    params_name: str,
    host: str,
    port: int,
    limits: ServeLimits,
    records: ArtifactRecords | None = None,
) -> None:
    """Load the models (each checked against ``records``, default the project's dvc.lock), warm them up
    with one product, and serve until interrupted."""
    records = records or ArtifactRecords.for_path(models_dir)
    predictor = Predictor.load(models_dir, params, params_name, records=records).in_process()  # no pool per request
    _predict_one(predictor, "warm-up", "", None, explain=False)  # spaCy and the first forward passes load here
    app = create_app(predictor, limits, model_metadata(predictor, records))
    log.info("serving %s on http://%s:%d", ", ".join(predictor.models.members), host, port)
    run_server(app, host, port, limits)

"""``rakuten serve``: the trained pipeline as an HTTP service (FastAPI), with a web page to try it.

Why a service: a model people cannot try is a model they do not trust. The service answers with
exactly what ``rakuten predict`` computes: it builds catalog rows with ingest's own function, cleans
them as the models were trained (:class:`rakuten.predict.Predictor`, loaded once at start) and fuses
the same models. Endpoints:

- ``GET /``: the web page (``rakuten/static/index.html``, plain HTML + JS);
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
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import tempfile
import threading
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from rakuten.classes import CLASS_CODES, CLASS_LABELS
from rakuten.data.catalog import X_COLUMNS, catalog_rows
from rakuten.errors import PipelineError
from rakuten.predict import Predictor, trained_model_dir

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
    max_image_pixels: int = _limit(40_000_000, "largest accepted decoded image, width x height (413 above; "
                                               "guards against decompression bombs)")
    max_text_chars: int = _limit(100_000, "longest accepted designation + description, in characters (413 above)")
    max_batch_rows: int = _limit(10_000, "most rows accepted in one batch CSV (413 above)")
    max_batch_mb: float = _limit(500.0, "largest accepted batch request, CSV + images, in MB (413 above)")
    chunk_rows: int = _limit(256, "batch rows predicted, then streamed back, per chunk")
    max_pending: int = _limit(32, "requests allowed to wait for the model; more get 503 (busy)")

    def __post_init__(self) -> None:
        for f in dataclass_fields(self):
            if not getattr(self, f.name) > 0:
                raise PipelineError(f"--{f.name.replace('_', '-')}: {getattr(self, f.name)}, expected a positive number")


class RequestError(Exception):
    """A bad request: HTTP status and one line for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------- metadata

def _lock_outs(lock: dict) -> dict[str, tuple[str, dict]]:
    """``path -> (stage, out entry)`` of every output recorded in a ``dvc.lock``."""
    found = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            found[str(out.get("path"))] = (stage, out)
    return found


def model_metadata(predictor: Predictor, lock_path: Path | None) -> dict[str, Any]:
    """What is served: the fused strategy, each model's folder with the hash DVC recorded for it in
    ``lock_path`` (and the params its stage ran with), the cleaning it was trained with, the classes."""
    models = predictor.models
    lock = {}
    if lock_path is not None and lock_path.is_file():
        lock = yaml.safe_load(lock_path.read_text()) or {}
    outs = _lock_outs(lock)
    root = lock_path.parent.resolve() if lock_path is not None else None
    artifacts = []
    for name, modality in [*zip(models.fused.models, models.fused.modalities), ("fusion", "fusion")]:
        folder = trained_model_dir(models.models_dir, name).resolve()
        rel = folder.relative_to(root).as_posix() if root is not None and folder.is_relative_to(root) else None
        stage, out = outs.get(rel, (None, None)) if rel else (None, None)
        params = (lock["stages"][stage].get("params") or {}) if stage else {}
        artifacts.append({
            "name": name, "modality": modality, "path": rel or str(folder),
            "dvc": ({"stage": stage, "md5": out.get("md5"), "size": out.get("size"), "nfiles": out.get("nfiles")}
                    if out else None),
            "params": {file: values for file, values in params.items()},
        })
    return {
        "strategy": models.fused.strategy,
        "models": artifacts,
        "lock_file": str(lock_path) if lock_path is not None and lock_path.is_file() else None,
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
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format, img.size
            if w * h > limits.max_image_pixels:
                raise RequestError(413, f"{field}: {w}x{h} pixels, more than the {limits.max_image_pixels} limit")
            img.verify()
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise RequestError(415, f"{field}: not a readable image; expected a JPEG, PNG or WebP file") from None
    if fmt not in IMAGE_FORMATS:
        raise RequestError(415, f"{field}: {fmt} image; expected one of {', '.join(IMAGE_FORMATS)}")


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(422, f"{field}: expected a string, got {type(value).__name__}")
    return value


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return False
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise RequestError(422, f"{field}: expected true or false, got {value!r}")


def single_product(fields: dict[str, Any], has_image: bool, limits: ServeLimits) -> tuple[str, str, bool]:
    """(designation, description, explain) of a single-product request, checked."""
    unknown = sorted(set(fields) - set(SINGLE_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; expected {', '.join(SINGLE_FIELDS)}")
    designation = _text(fields.get("designation"), "designation")
    description = _text(fields.get("description"), "description")
    if len(designation) + len(description) > limits.max_text_chars:
        raise RequestError(413, f"designation + description: {len(designation) + len(description)} characters, "
                                f"more than the {limits.max_text_chars} limit")
    if not designation.strip() and not description.strip() and not has_image:
        raise RequestError(422, "no input: give a designation, a description or an image")
    return designation, description, _flag(fields.get("explain"), "explain")


def one_row(designation: str, description: str) -> pd.DataFrame:
    """The X_test-layout row of a single product (productid and imageid 0: its image, if any, is
    ``image_0_product_0.jpg``)."""
    return pd.DataFrame({"designation": [designation], "description": [description or None],
                         "productid": ["0"], "imageid": ["0"]}, index=pd.Index([0]))


def top_classes(table_row: pd.Series, k: int = 3) -> list[dict[str, Any]]:
    return [{"code": int(table_row[f"top{j}_code"]), "label": CLASS_LABELS[int(table_row[f"top{j}_code"])],
             "proba": float(table_row[f"top{j}_proba"])} for j in range(1, k + 1)]


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
    """The web page shipped in the package (``rakuten/static/index.html``)."""
    return resources.files("rakuten").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(predictor: Predictor, limits: ServeLimits = ServeLimits(), metadata: dict | None = None):
    """The FastAPI application serving ``predictor`` (loaded once, shared by every request)."""
    app = FastAPI(title="Rakuten product classification", version="1", docs_url="/docs", redoc_url=None)
    gate = Gate(limits.max_pending)
    meta = metadata if metadata is not None else model_metadata(predictor, None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error(exc.status, exc.message)

    @app.exception_handler(PipelineError)
    async def _pipeline_error(request, exc: PipelineError):
        return error(422, str(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return error(exc.status_code, exc.detail)

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
        """Text fields and uploads of a multipart/urlencoded form (size checked before parsing)."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise RequestError(413, f"request body of {int(length) / 1e6:.1f} MB, larger than the "
                                    f"{max_bytes / 1e6:g} MB limit")
        try:
            form = await request.form(max_files=max_files, max_fields=64, max_part_size=int(limits.max_image_mb * 1e6) + 1)
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

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page_html())

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": list(predictor.models.members), "strategy": predictor.models.fused.strategy}

    @app.get("/metadata")
    def metadata_endpoint() -> dict:
        return meta

    @app.post("/predict")
    async def predict(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        image: bytes | None = None
        if kind == "application/json":
            limit = 4 * limits.max_text_chars + 64_000   # UTF-8 and JSON escapes of the longest accepted text
            raw = bytearray()
            async for chunk in request.stream():   # read with a bound: a body without a length cannot grow memory
                raw.extend(chunk)
                if len(raw) > limit:
                    raise RequestError(413, f"JSON body larger than {limit} bytes; the text limit is "
                                            f"{limits.max_text_chars} characters")
            try:
                body = json.loads(bytes(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RequestError(400, "body: not valid JSON; expected an object with designation, description") from None
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
                    image = None   # an empty file input of a browser form: no image
        else:
            raise RequestError(415, f"content type {kind or 'none'!r}; expected application/json or multipart/form-data")
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
            raise RequestError(415, f"content type {kind or 'none'!r}; expected multipart/form-data with csv and images")
        fields, files = await form_fields(request, max_files=limits.max_batch_rows + 1,
                                          max_bytes=limits.max_batch_mb * 1e6)
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
            for upload in files.get("images", []):
                name = batch_image_name(upload.filename)
                data = await upload.read()
                check_image(data, f"images: {name}", limits)
                (root / "images" / name).write_bytes(data)
            rows = _batch_rows(root / "x.csv", files["csv"][0].filename or "csv", root / "images", limits)
        except BaseException:
            work.cleanup()
            raise
        gate.enter()

        def stream() -> Iterator[str]:
            try:
                for start in range(0, len(rows), limits.chunk_rows):
                    chunk = rows.iloc[start:start + limits.chunk_rows]
                    table = predictor.predict_rows(chunk, root / f"work_{start}").table
                    yield csv_chunks(table, header=start == 0)
            except Exception:
                log.exception("batch prediction failed; the response is cut short")
                raise
            finally:
                gate.leave()
                work.cleanup()

        return StreamingResponse(stream(), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="predictions.csv"'})

    return app


def _batch_rows(x_path: Path, name: str, image_dir: Path, limits: ServeLimits) -> pd.DataFrame:
    """Catalog rows of an uploaded batch CSV; errors name the uploaded file, not the temporary copy."""
    from rakuten.data.catalog import read_official_csv

    try:
        x = read_official_csv(x_path, X_COLUMNS)
        if len(x) == 0:
            raise PipelineError(f"{x_path}: no rows to classify")
        if len(x) > limits.max_batch_rows:
            raise RequestError(413, f"csv: {len(x)} rows, more than the {limits.max_batch_rows} limit")
        rows, _ = catalog_rows(x, x_path, image_dir)
    except PipelineError as exc:
        raise RequestError(422, str(exc).replace(str(x_path), f"csv {name}")) from None
    return rows


def _predict_one(predictor: Predictor, designation: str, description: str, image: bytes | None,
                 explain: bool) -> dict[str, Any]:
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
            "prdtypecode": int(row["prdtypecode"]), "label": str(row["label"]),
            "top": top_classes(row), "inputs_used": str(row["inputs_used"]),
        }
        if explain:
            index = int(np.argmax(result.proba[0]))
            answer["explanations"] = predictor.explain(result.frame.iloc[0], index)
    return answer


def serve(models_dir: Path, params: dict | None, params_name: str, host: str, port: int,
          limits: ServeLimits, lock_path: Path | None) -> None:
    """Load the models, warm them up with one product, and serve until interrupted."""
    import uvicorn

    predictor = Predictor.load(models_dir, params, params_name).in_process()   # no pool forked per request
    _predict_one(predictor, "warm-up", "", None, explain=False)   # spaCy and the first forward passes load here
    app = create_app(predictor, limits, model_metadata(predictor, lock_path))
    log.info("serving %s on http://%s:%d", ", ".join(predictor.models.members), host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

"""`rakuten serve`: the API on the real models of the tiny DVC-built project (the session fixture
``tiny_built_repo``), in process through FastAPI's TestClient. The web page in a real browser, with
the service started as users start it: tests/serving/test_serve_browser.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import re
import socket
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from rakuten.contracts.classes import CLASS_LABELS
from rakuten.core.integrity import ArtifactRecords
from rakuten.core.params import load_params
from rakuten.serving.http_guards import (
    RateLimitFilter,
    RequestError,
    _loop_exception,
    connection_budget,
    guarded_protocol,
    raise_file_limit,
)
from rakuten.serving.predict import Predictor
from rakuten.serving.serve.app import create_app
from rakuten.serving.serve.limits import ServeLimits
from rakuten.serving.serve.metadata import model_metadata
from rakuten.serving.serve.service import Gate

ROWS = 5


@pytest.fixture(scope="module")
def served(tiny_built_repo):
    """The tiny project's predictor (loaded once) and a small batch of its official test rows."""
    repo = tiny_built_repo
    predictor = Predictor.load(repo / "models", load_params(repo / "params.yaml"))
    x = pd.read_csv(repo / "data/sample/X_test_update.csv", index_col=0).head(ROWS)
    return repo, predictor, x


@pytest.fixture(scope="module")
def client(served):
    repo, predictor, _ = served
    app = create_app(
        predictor.in_process(),
        ServeLimits(chunk_rows=2, max_image_mb=1.0, max_image_pixels=1_000_000, max_batch_rows=50),
        model_metadata(predictor, ArtifactRecords.from_lock(repo / "dvc.lock")),
    )
    with TestClient(app) as c:
        yield c


def _image_name(row: pd.Series) -> str:
    return f"image_{row['imageid']}_product_{row['productid']}.jpg"


def _image_bytes(repo: Path, row: pd.Series) -> bytes:
    return (repo / "data/sample/images/image_test" / _image_name(row)).read_bytes()


def _expected(served, tmp_path: Path, x: pd.DataFrame, with_images: int | None = None) -> pd.DataFrame:
    """What `rakuten predict` (the same Predictor.predict_csv) writes for ``x``, with the images of
    its first ``with_images`` rows (all by default)."""
    repo, predictor, _ = served
    images = tmp_path / "images"
    images.mkdir(parents=True)
    x.to_csv(tmp_path / "x.csv")
    for _, row in x.iloc[:with_images].iterrows():
        (images / _image_name(row)).write_bytes(_image_bytes(repo, row))
    return predictor.predict_csv(tmp_path / "x.csv", images, tmp_path / "work").table


def _one_line_error(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    for fragment in fragments:
        assert fragment in body["error"], body


def test_health_and_metadata_name_the_served_artifacts(client, served):
    repo, predictor, _ = served
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == list(predictor.models.fused.models)
    meta = client.get("/metadata").json()
    assert meta["strategy"] == predictor.models.fused.strategy
    fused = predictor.models.fused
    assert meta["calibration"]["method"] == fused.calibrator.method in ("none", "temperature", "vector_scaling")
    assert meta["review_threshold"] == pytest.approx(fused.review_threshold, abs=1e-6)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    recorded = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    names = [m["name"] for m in meta["models"]]
    assert names == [*predictor.models.fused.models, "fusion"]
    for m in meta["models"]:
        assert m["path"] == f"models/{m['name']}" and m["dvc"]["md5"] == recorded[m["path"]]
        assert m["dvc"]["md5"].endswith(".dir")
        assert m["md5"] == m["dvc"]["md5"] and m["verified"] is True  # hashed from the files served
    tfidf = next(m for m in meta["models"] if m["name"] == "tfidf_svm")
    assert tfidf["params"]["params.yaml"]["tfidf_svm"] == load_params(repo / "params.yaml")["tfidf_svm"]
    assert set(meta["preprocessing"]) == {"text_clean", "image_clean"}
    assert [c["label"] for c in meta["classes"]] == [CLASS_LABELS[c["code"]] for c in meta["classes"]]


def test_single_product_answers_as_rakuten_predict(client, served, tmp_path):
    """Text only (JSON) and text + photo (multipart): the same class, top-3 and probabilities as the
    `rakuten predict` table for that product, and inputs_used says which inputs were read."""
    repo, _, x = served
    row = x.iloc[0]
    expected_text = _expected(served, tmp_path / "text", x.head(1), with_images=0).iloc[0]
    expected_both = _expected(served, tmp_path / "both", x.head(1)).iloc[0]
    text_only = client.post(
        "/predict",
        json={
            "designation": row["designation"],
            "description": None if pd.isna(row["description"]) else row["description"],
        },
    )
    form = {"designation": row["designation"], "description": "" if pd.isna(row["description"]) else row["description"]}
    both = client.post("/predict", data=form, files={"image": ("photo.jpg", _image_bytes(repo, row), "image/jpeg")})
    for response, expected, used in (
        (text_only, expected_text, "text only (image missing)"),
        (both, expected_both, "text+image"),
    ):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["inputs_used"] == expected["inputs_used"] == used
        assert answer["needs_review"] is bool(expected["needs_review"])
        assert answer["needs_review"] is (answer["top"][0]["proba"] < served[1].models.fused.review_threshold)
        assert (
            answer["prdtypecode"] == expected["prdtypecode"] and answer["label"] == CLASS_LABELS[answer["prdtypecode"]]
        )
        assert [t["code"] for t in answer["top"]] == [expected[f"top{j}_code"] for j in (1, 2, 3)]
        assert np.allclose(
            [t["proba"] for t in answer["top"]], [expected[f"top{j}_proba"] for j in (1, 2, 3)], atol=1e-6
        )
        assert "explanations" not in answer
    image_only = client.post("/predict", files={"image": ("photo.png", _png(64, 64), "image/png")})
    assert image_only.status_code == 200 and image_only.json()["inputs_used"].startswith("image only")


def test_batch_streams_the_rakuten_predict_table(client, served, tmp_path):
    """A CSV in the X_test layout + its images -> exactly the `rakuten predict` CSV, streamed in chunks
    (chunk_rows=2 here: three chunks for five rows, one header)."""
    repo, _, x = served
    x = x.copy()
    x.iloc[3, [x.columns.get_loc("designation"), x.columns.get_loc("description")]] = (
        ""  # one row without text, one (the last) without its image
    )
    expected = _expected(served, tmp_path, x, with_images=len(x) - 1)
    files = [("csv", ("new.csv", x.to_csv().encode(), "text/csv"))]
    files += [("images", (_image_name(r), _image_bytes(repo, r), "image/jpeg")) for _, r in x.iloc[:-1].iterrows()]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.count("inputs_used") == 1
    got = pd.read_csv(io.StringIO(response.text), index_col=0)
    expected_csv = pd.read_csv(io.StringIO(expected.to_csv()), index_col=0)
    pd.testing.assert_frame_equal(got, expected_csv)
    assert got["inputs_used"].iloc[3].startswith("image only") and got["inputs_used"].iloc[-1].startswith("text only")


def _png(w: int, h: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_SINGLE = [
    ("no input", dict(json={"designation": " ", "description": ""}), 422, ("no input",)),
    ("unknown JSON field", dict(json={"designation": "x", "price": 3}), 422, ("unknown field 'price'",)),
    ("unknown form field", dict(data={"designation": "x", "colour": "red"}), 422, ("unknown field 'colour'",)),
    (
        "unknown file field",
        dict(data={"designation": "x"}, files={"photo": ("a.jpg", b"x", "image/jpeg")}),
        422,
        ("unknown file field 'photo'",),
    ),
    (
        "not an image",
        dict(data={"designation": "x"}, files={"image": ("a.jpg", b"%PDF-1.4 not an image", "image/jpeg")}),
        415,
        ("image: not a readable image",),
    ),
    (
        "oversized image",
        dict(files={"image": ("a.jpg", b"\xff\xd8" + bytes(1_100_000), "image/jpeg")}),
        413,
        ("MB limit",),
    ),
    ("too many pixels", dict(files={"image": ("a.png", _png(1200, 1000), "image/png")}), 413, ("1200x1000",)),
    ("text too long", dict(json={"designation": "a" * 100_001}), 413, ("100001 characters",)),
    (
        "huge JSON body",
        dict(content=b'{"designation": "' + b"a" * 500_000 + b'"}', headers={"content-type": "application/json"}),
        413,
        ("JSON body larger than",),
    ),
    ("wrong type", dict(json={"designation": 12}), 422, ("designation: expected a string",)),
    (
        "bad explain flag",
        dict(json={"designation": "x", "explain": "maybe"}),
        422,
        ("explain: expected true or false",),
    ),
    ("not JSON", dict(content=b"{designation", headers={"content-type": "application/json"}), 400, ("not valid JSON",)),
    ("JSON list", dict(json=["x"]), 422, ("expected a JSON object",)),
    ("image in JSON", dict(json={"designation": "x", "image": "aGVsbG8="}), 422, ("multipart",)),
    ("content type", dict(content=b"x", headers={"content-type": "text/plain"}), 415, ("text/plain",)),
]


@pytest.mark.parametrize("case", BAD_SINGLE, ids=[c[0] for c in BAD_SINGLE])
def test_bad_single_requests_are_one_line_4xx(client, case):
    _, kwargs, status, fragments = case
    _one_line_error(client.post("/predict", **kwargs), status, *fragments)
    assert client.get("/health").json()["status"] == "ok"


def test_bad_batch_requests_are_one_line_4xx(client, served):
    repo, _, x = served
    good_csv = ("csv", ("new.csv", x.to_csv().encode(), "text/csv"))
    cases = [
        (
            dict(files=[("csv", ("new.csv", b",title,productid,imageid\n0,a,1,2\n", "text/csv"))]),
            422,
            ("csv new.csv", "missing column 'designation'"),
        ),
        (
            dict(
                files=[
                    ("csv", ("new.csv", x.to_csv().replace(str(x["productid"].iloc[1]), "12ab").encode(), "text/csv"))
                ]
            ),
            422,
            ("csv new.csv", "productid"),
        ),
        (
            dict(files=[good_csv, ("images", ("../../etc/passwd", b"x", "image/jpeg"))]),
            422,
            ("image_<imageid>_product_<productid>.jpg",),
        ),
        (
            dict(files=[good_csv, ("images", (_image_name(x.iloc[0]), b"not a jpeg", "image/jpeg"))]),
            415,
            ("images: image_",),
        ),
        (dict(files=[good_csv], data={"explain": "true"}), 422, ("unknown field 'explain'",)),
        (
            dict(files=[("images", (_image_name(x.iloc[0]), _image_bytes(repo, x.iloc[0]), "image/jpeg"))]),
            422,
            ("csv: expected one CSV file",),
        ),
        (
            dict(
                files=[("csv", ("big.csv", pd.concat([x] * 11).reset_index(drop=True).to_csv().encode(), "text/csv"))]
            ),
            413,
            ("55 rows", "50 limit"),
        ),
        (dict(json={"csv": "x"}), 415, ("multipart/form-data",)),
    ]
    for kwargs, status, fragments in cases:
        _one_line_error(client.post("/predict/batch", **kwargs), status, *fragments)
    assert client.get("/health").json()["status"] == "ok"


def test_concurrent_requests_all_answered_like_sequential_ones(client, served):
    """Eight clients at once: every request answered, each exactly as when sent alone."""
    _, _, x = served
    bodies = [{"designation": t} for t in x["designation"].tolist()[:4]] * 2
    alone = [client.post("/predict", json=b).json() for b in bodies[:4]] * 2
    results: list = [None] * len(bodies)

    def send(i: int) -> None:
        results[i] = client.post("/predict", json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [r.status_code for r in results] == [200] * len(bodies)
    assert [r.json() for r in results] == alone


def _mixed_requests(repo: Path, x: pd.DataFrame) -> list[dict]:
    """Per row: text only (JSON), text + photo (form), the photo without text; one empty description."""
    out = []
    for i, (_, row) in enumerate(x.iterrows()):
        text = {"designation": row["designation"], "description": "" if i == 1 else row["description"]}
        text = {k: ("" if pd.isna(v) else v) for k, v in text.items()}
        photo = {"image": (_image_name(row), _image_bytes(repo, row), "image/jpeg")}
        out += [dict(json=text), dict(data=text, files=photo), dict(data={"designation": ""}, files=photo)]
    return out


def test_batched_answers_are_the_one_at_a_time_answers(served):
    """Fifteen requests at once, text only, text + photo and photo only, to a service that batches them
    (several share a call of the predictor): each JSON answer, probabilities included, is the one the
    service gives the same request predicted alone (max_batch_size 1)."""
    repo, predictor, x = served
    requests = _mixed_requests(repo, x)
    with TestClient(create_app(predictor.in_process(), ServeLimits(max_batch_size=1), metadata={})) as alone_client:
        alone = [alone_client.post("/predict", **r) for r in requests]
    assert [r.status_code for r in alone] == [200] * len(requests), [r.text for r in alone]
    app = create_app(predictor.in_process(), ServeLimits(max_batch_size=8, max_batch_delay_ms=300), metadata={})
    results: list = [None] * len(requests)
    with TestClient(app) as c:

        def send(i: int) -> None:
            results[i] = c.post("/predict", **requests[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    stats = app.state.service.batcher.stats
    assert stats.rows == len(requests) and stats.mean_batch_size() > 1 and stats.fallbacks == 0
    assert [r.status_code for r in results] == [200] * len(requests)
    assert [r.json() for r in results] == [r.json() for r in alone]
    assert {r.json()["inputs_used"] for r in alone} >= {"text+image", "text only (image missing)"}
    assert any(r.json()["inputs_used"].startswith("image only") for r in alone)


def test_gate_refuses_past_the_pending_limit():
    gate = Gate(2)
    gate.enter()
    gate.enter()
    with pytest.raises(RequestError, match="busy: 2 requests already waiting") as exc:
        gate.enter()
    assert exc.value.status == 503
    gate.leave()
    gate.enter()  # a slot freed is usable again


def test_limits_must_be_positive():
    from rakuten.core.errors import PipelineError

    with pytest.raises(PipelineError, match=r"^serve.max_pending = 0, expected an integer in \[1, inf\]$"):
        ServeLimits(max_pending=0)
    with pytest.raises(PipelineError, match=r"^serve.body_timeout_s = -1, expected a number in \(0, inf\]$"):
        ServeLimits(body_timeout_s=-1)


def test_page_is_served_with_the_form(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for element in ('id="designation"', 'id="description"', 'id="image"', 'id="explain"', 'id="top"', 'id="review"'):
        assert element in response.text


# ----------------------------------------------------------------------------- hostile clients
# What a hostile tester found, each case refused as documented (docs/serve.md, "Resource limits").

STRICT = ServeLimits(
    chunk_rows=1,
    max_image_mb=1.0,
    max_image_pixels=1_000_000,
    max_batch_rows=50,
    max_batch_mb=3.0,
    max_pending=1,
    body_timeout_s=0.3,
)


@pytest.fixture(scope="module")
def strict(served):
    """An app with tight limits (STRICT), its own predictor copy (tests count its calls), for the cases
    driven over ASGI directly: a chunked body fed piece by piece, a stall, a client that goes away."""
    predictor = served[1].in_process()
    return create_app(predictor, STRICT, metadata={}), predictor


def _scope(method: str, path: str, headers: dict[str, str]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def _asgi(app, method: str, path: str, headers: dict[str, str], receive) -> tuple[int, dict[str, str], bytes]:
    """One request to ``app`` over ASGI, as uvicorn sends it (spec 2.3), the body from ``receive``:
    (status, headers, body)."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(_scope(method, path, headers), receive, send), timeout=60))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[str, bytes]:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


class Feed:
    """An ASGI receive that streams ``total`` bytes of a multipart upload in 64 kB chunks, never holding
    it, and counts what the app pulled; then stalls, or says the client went away."""

    def __init__(self, head: bytes, total: int, after: str = "end"):
        self.head, self.total, self.after, self.pulled = head, total, after, 0

    async def __call__(self) -> dict:
        if self.pulled >= self.total:
            if self.after == "stall":
                await asyncio.sleep(3600)
            if self.after == "disconnect":
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": b"\r\n--b0undary--\r\n", "more_body": False}
        chunk = self.head if self.pulled == 0 else bytes(min(65536, self.total - self.pulled))
        self.pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}


@pytest.mark.parametrize("path, field, limit_mb", [("/predict", "image", 2.0), ("/predict/batch", "csv", 3.0)])
def test_chunked_uploads_are_refused_while_they_stream(strict, path, field, limit_mb):
    """A 50 MB part without Content-Length (chunked): the 413 comes once the limit (image + 1 MB; the
    batch limit) is read, the rest is never pulled, and the connection is closed, not drained."""
    app, _ = strict
    kind, _ = _multipart([])
    head = f'--b0undary\r\nContent-Disposition: form-data; name="{field}"; filename="x.jpg"\r\n\r\n'.encode()
    feed = Feed(head, 50_000_000)
    status, headers, body = _asgi(app, "POST", path, {"content-type": kind, "transfer-encoding": "chunked"}, feed)
    assert status == 413 and f"{limit_mb:g} MB limit of {path}" in body.decode(), body
    assert feed.pulled <= limit_mb * 1e6 + 65536
    assert headers["connection"] == "close"


def test_chunked_oversized_batch_is_refused_by_the_test_client_too(strict):
    """The same through HTTP (TestClient, a generator body: chunked, no length header)."""
    kind, body = _multipart([("csv", "x.csv", b"a" * 3_500_000)])
    with TestClient(strict[0]) as c:
        response = c.post(
            "/predict/batch",
            content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers={"content-type": kind},
        )
    assert "content-length" not in response.request.headers
    _one_line_error(response, 413, "3 MB limit")


def test_a_stalled_body_gets_408_and_the_connection_closed(strict):
    app, _ = strict
    kind, _ = _multipart([])
    head = b'--b0undary\r\nContent-Disposition: form-data; name="designation"\r\n\r\n'
    started = time.monotonic()
    status, headers, body = _asgi(
        app,
        "POST",
        "/predict",
        {"content-type": kind, "transfer-encoding": "chunked"},
        Feed(head, 100_000, after="stall"),
    )
    assert status == 408 and "nothing received for 0.3 s" in body.decode() and headers["connection"] == "close"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["application/json", "multipart"])
def test_a_client_gone_mid_body_is_one_info_line(strict, caplog, kind):
    app, _ = strict
    if kind == "multipart":
        kind, _ = _multipart([])
    head = (
        b'--b0undary\r\nContent-Disposition: form-data; name="designation"\r\n\r\n'
        if "multipart" in kind
        else b'{"designation": "'
    )
    with caplog.at_level(logging.INFO):
        _asgi(
            app,
            "POST",
            "/predict",
            {"content-type": kind, "transfer-encoding": "chunked"},
            Feed(head, 10_000, after="disconnect"),
        )
    lines = [r for r in caplog.records if r.name == "rakuten.serving.serve"]
    assert [r.levelno for r in lines] == [logging.INFO] and "went away" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records) and not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_batch_stops_predicting_when_the_client_goes_away(strict, served, monkeypatch, caplog):
    """chunk_rows=1, five rows: the client leaves after the first chunk; at most the chunk under way
    is still predicted, the work folder is removed and the model slot (max_pending=1) is free again."""
    app, predictor = strict
    _, _, x = served
    calls = []
    real = predictor.predict_rows
    monkeypatch.setattr(predictor, "predict_rows", lambda rows, work: calls.append(len(rows)) or real(rows, work))
    kind, body = _multipart([("csv", "x.csv", x.to_csv().encode())])
    before = set(Path(tempfile.gettempdir()).glob("rakuten-serve-*"))

    def client(leave: bool):
        state = {"body": False, "first_chunk": asyncio.Event()}

        async def receive() -> dict:
            if not state["body"]:
                state["body"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            if leave:
                await state["first_chunk"].wait()
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                state["first_chunk"].set()
                sent.append(message["body"])

        sent: list[bytes] = []
        asyncio.run(asyncio.wait_for(app(_scope("POST", "/predict/batch", {"content-type": kind}), receive, send), 60))
        return b"".join(sent).decode()

    with caplog.at_level(logging.INFO):
        client(leave=True)
    assert 1 <= len(calls) <= 2, calls
    assert any(re.search(r"went away after [12] of 5 rows", r.getMessage()) for r in caplog.records)
    assert set(Path(tempfile.gettempdir()).glob("rakuten-serve-*")) <= before
    calls.clear()
    full = client(leave=False)  # the slot was given back: not a 503
    assert len(calls) == ROWS and pd.read_csv(io.StringIO(full), index_col=0).index.tolist() == x.index.tolist()


def test_batch_rows_obey_the_text_limit(client, served):
    _, _, x = served
    x = x.head(2).copy()
    x.iloc[1, x.columns.get_loc("designation")] = "a" * 100_001
    response = client.post("/predict/batch", files=[("csv", ("long.csv", x.to_csv().encode(), "text/csv"))])
    _one_line_error(response, 413, "csv long.csv: data row 2", f"index {x.index[1]}", "100001 characters")


def test_batch_images_with_the_same_name_are_refused(client, served):
    repo, _, x = served
    image = ("images", (_image_name(x.iloc[0]), _image_bytes(repo, x.iloc[0]), "image/jpeg"))
    response = client.post(
        "/predict/batch", files=[("csv", ("new.csv", x.to_csv().encode(), "text/csv")), image, image]
    )
    _one_line_error(response, 422, f"images: {_image_name(x.iloc[0])} uploaded twice")


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims ``w`` x ``h`` pixels in a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


WEAK = [
    (
        "deeply nested JSON",
        dict(content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}),
        400,
        ("nested too deeply",),
    ),
    (
        "nested in a field",
        dict(
            content=b'{"designation": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            headers={"content-type": "application/json"},
        ),
        400,
        ("nested too deeply",),
    ),
    (
        "lone surrogate",
        dict(content=b'{"designation": "sac \\ud800"}', headers={"content-type": "application/json"}),
        400,
        ("designation: lone surrogate", "character 4"),
    ),
    (
        "duplicate key",
        dict(content=b'{"designation": "a", "designation": "b"}', headers={"content-type": "application/json"}),
        422,
        ("'designation': given twice",),
    ),
    (
        "decompression bomb",
        dict(files={"image": ("bomb.png", _png_header_only(20_000, 20_000), "image/png")}),
        413,
        ("image:", "pixels"),
    ),
    (
        "bomb under PIL's error",
        dict(files={"image": ("bomb.png", _png_header_only(10_000, 10_000), "image/png")}),
        413,
        ("image:", "pixels"),
    ),
]


@pytest.mark.parametrize("case", WEAK, ids=[c[0] for c in WEAK])
def test_weak_cases_are_one_line_4xx_without_traceback(client, caplog, case):
    _, kwargs, status, fragments = case
    with caplog.at_level(logging.INFO):
        _one_line_error(client.post("/predict", **kwargs), status, *fragments)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


def test_head_and_405_allow(client):
    head = client.head("/")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"].startswith("text/html")
    assert client.head("/health").status_code == 200
    for method, path, allowed in (
        ("GET", "/predict", {"POST"}),
        ("DELETE", "/", {"GET", "HEAD"}),
        ("PUT", "/health", {"GET", "HEAD"}),
        ("GET", "/predict/batch", {"POST"}),
    ):
        response = client.request(method, path)
        _one_line_error(response, 405)
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed, (method, path)


def test_docs_page_loads_no_script(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "<script" not in page.text.lower() and 'href="openapi.json"' in page.text
    assert "/predict/batch" in page.text and client.get("/openapi.json").status_code == 200


def test_every_response_carries_the_security_headers(client, monkeypatch):
    from rakuten.serving.serve import single

    monkeypatch.setattr(single, "answer", lambda *a: 1 / 0)  # batched or not, every answer goes through it
    crashing = TestClient(client.app, raise_server_exceptions=False)
    responses = [
        client.get("/"),
        client.get("/health"),
        client.get("/docs"),
        client.get("/nowhere"),
        client.post("/predict", json={}),
        client.delete("/"),
        crashing.post("/predict", json={"designation": "x"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 422, 405, 500]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert (
            r.headers["referrer-policy"] == "no-referrer"
            and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        )
    # the page's CSP allows exactly its own inline script and style (by hash); tests/serving/test_serve_browser.py
    # runs the page under it in Chromium
    page, csp = responses[0].text, responses[0].headers["content-security-policy"]
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        block = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in csp
    assert "unsafe-inline" not in csp and "img-src 'self' data: blob:" in csp
    assert responses[2].headers["content-security-policy"].startswith("default-src 'none'")


def test_new_limits_are_serve_options():
    from rakuten.serving.cli import build_parser, serve_limits

    args = build_parser().parse_args(
        [
            "serve",
            "--max-connections",
            "7",
            "--header-timeout-s",
            "0.5",
            "--body-timeout-s",
            "2",
            "--keep-alive-s",
            "1",
            "--log-every-s",
            "3",
        ]
    )
    limits = serve_limits(args, None, "params.yaml")
    assert (
        limits.max_connections,
        limits.header_timeout_s,
        limits.body_timeout_s,
        limits.keep_alive_s,
        limits.log_every_s,
    ) == (
        7,
        0.5,
        2.0,
        1.0,
        3.0,
    )
    with pytest.raises(Exception, match="serve.header_timeout_s = 0, expected a number in"):
        ServeLimits(header_timeout_s=0)


def test_repeated_warnings_are_rate_limited(caplog):
    """An accept failure (out of file descriptors) a thousand times: one line, no traceback; the next one
    after the window says how many were left out."""
    now = [0.0]
    logger = logging.getLogger("rakuten.serving.http_guards")
    throttle = RateLimitFilter(10.0, clock=lambda: now[0])
    logger.addFilter(throttle)

    class Loop:
        def default_exception_handler(self, context):  # anything else still reaches asyncio's own
            raise AssertionError(context)

    try:
        with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
            for _ in range(1000):
                _loop_exception(
                    Loop(),
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    },
                )
            now[0] = 11.0
            _loop_exception(
                Loop(),
                {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")},
            )
    finally:
        logger.removeFilter(throttle)
    lines = [r.getMessage() for r in caplog.records if r.name == "rakuten.serving.http_guards"]
    assert len(lines) == 2 and all("Too many open files" in line for line in lines), lines
    assert "[and 999 more like this in the last 11 s]" in lines[1]
    assert not any(r.exc_info for r in caplog.records)


def test_connections_fit_the_file_limit():
    """The cap plus one accept batch always fits the open-file limit (raised to the hard limit first),
    so that accept() never fails: the accept-error flood cannot start."""
    import resource

    assert raise_file_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert connection_budget(1_048_576, 1000) == (1000, 2048)
    for files, wanted in ((20_000, 1000), (4096, 1000), (1024, 1000), (400, 5000), (300, 10)):
        cap, burst = connection_budget(files, wanted)
        assert 1 <= cap <= wanted and burst >= 64
        assert cap + 4 * burst <= max(files - 256, 257), (files, cap, burst)


def test_idle_connections_are_capped_and_timed_out():
    """uvicorn with the guarded protocol, in a thread: 4 connections (plus 2 accepted in one go) at most,
    headers within 0.5 s. Idle connections past the cap make room (oldest first) for a client with a
    request; every idle one is closed after the header timeout, a kept-alive one that starts a request
    and stalls too; when all four have a request under way, new connections are closed, the one past
    the ceiling at once."""
    import httpx
    import uvicorn

    release = threading.Event()

    async def app(scope, receive, send):
        if scope["path"] == "/slow":
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol = guarded_protocol(max_connections=4, header_timeout_s=0.5, burst=2)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, lifespan="off", log_config=None, timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()

    def answered(s: socket.socket) -> bool:
        s.settimeout(5)
        got = b""
        while not got.endswith(b"ok") and (chunk := s.recv(1024)):
            got += chunk
        return got.startswith(b"HTTP/1.1 200") and got.endswith(b"ok")

    def closed_by_server(s: socket.socket) -> bool:
        s.settimeout(2)
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    try:
        while not server.started:
            time.sleep(0.01)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
        for s in idle:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        time.sleep(0.2)
        assert protocol.open_count == 4 and protocol.closed["evicted"] == 2
        assert closed_by_server(idle[0]) and closed_by_server(idle[1])  # the oldest two made room
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text == "ok"

        kept = socket.create_connection(("127.0.0.1", port))
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answered(kept)
        kept.sendall(b"GET / HTTP/1.1\r\n")  # the next request starts, and stalls
        started = time.monotonic()
        assert all(closed_by_server(s) for s in [*idle[2:], kept])
        assert time.monotonic() - started < 1.5  # 6 idle + 1 kept: made room for the next client, or timed out
        assert protocol.closed["evicted"] >= 3 and protocol.closed["evicted"] + protocol.closed["header_timeout"] == 7

        busy = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for s in busy:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        closed_before = protocol.closed["evicted"] + protocol.closed["refused"]
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        assert all(closed_by_server(s) for s in extra)
        assert protocol.closed["evicted"] + protocol.closed["refused"] == closed_before + 3
        release.set()
        assert all(answered(s) for s in busy) and protocol.open_count <= 4
        for s in [*idle, kept, *busy, *extra]:
            s.close()
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)

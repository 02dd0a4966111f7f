"""`rakuten serve`: the API on the real models of the tiny DVC-built project (the session fixture
``tiny_built_repo``), in process through FastAPI's TestClient. The web page in a real browser, with
the service started as users start it: tests/test_serve_browser.py."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from rakuten.classes import CLASS_LABELS
from rakuten.params import load_params
from rakuten.predict import Predictor
from rakuten.serve import Gate, RequestError, ServeLimits, create_app, model_metadata

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
    app = create_app(predictor.in_process(), ServeLimits(chunk_rows=2, max_image_mb=1.0, max_image_pixels=1_000_000,
                                            max_batch_rows=50),
                     model_metadata(predictor, repo / "dvc.lock"))
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
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    recorded = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    names = [m["name"] for m in meta["models"]]
    assert names == [*predictor.models.fused.models, "fusion"]
    for m in meta["models"]:
        assert m["path"] == f"models/{m['name']}" and m["dvc"]["md5"] == recorded[m["path"]]
        assert m["dvc"]["md5"].endswith(".dir")
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
    text_only = client.post("/predict", json={"designation": row["designation"],
                                              "description": None if pd.isna(row["description"]) else row["description"]})
    form = {"designation": row["designation"], "description": "" if pd.isna(row["description"]) else row["description"]}
    both = client.post("/predict", data=form, files={"image": ("photo.jpg", _image_bytes(repo, row), "image/jpeg")})
    for response, expected, used in ((text_only, expected_text, "text only (image missing)"),
                                     (both, expected_both, "text+image")):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["inputs_used"] == expected["inputs_used"] == used
        assert answer["prdtypecode"] == expected["prdtypecode"] and answer["label"] == CLASS_LABELS[answer["prdtypecode"]]
        assert [t["code"] for t in answer["top"]] == [expected[f"top{j}_code"] for j in (1, 2, 3)]
        assert np.allclose([t["proba"] for t in answer["top"]], [expected[f"top{j}_proba"] for j in (1, 2, 3)], atol=1e-6)
        assert "explanations" not in answer
    image_only = client.post("/predict", files={"image": ("photo.png", _png(64, 64), "image/png")})
    assert image_only.status_code == 200 and image_only.json()["inputs_used"].startswith("image only")


def test_batch_streams_the_rakuten_predict_table(client, served, tmp_path):
    """A CSV in the X_test layout + its images -> exactly the `rakuten predict` CSV, streamed in chunks
    (chunk_rows=2 here: three chunks for five rows, one header)."""
    repo, _, x = served
    x = x.copy()
    x.iloc[3, [x.columns.get_loc("designation"), x.columns.get_loc("description")]] = ""   # one row without text, one (the last) without its image
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
    ("unknown file field", dict(data={"designation": "x"}, files={"photo": ("a.jpg", b"x", "image/jpeg")}), 422,
     ("unknown file field 'photo'",)),
    ("not an image", dict(data={"designation": "x"}, files={"image": ("a.jpg", b"%PDF-1.4 not an image", "image/jpeg")}),
     415, ("image: not a readable image",)),
    ("oversized image", dict(files={"image": ("a.jpg", b"\xff\xd8" + bytes(1_100_000), "image/jpeg")}), 413,
     ("MB limit",)),
    ("too many pixels", dict(files={"image": ("a.png", _png(1200, 1000), "image/png")}), 413, ("1200x1000",)),
    ("text too long", dict(json={"designation": "a" * 100_001}), 413, ("100001 characters",)),
    ("huge JSON body", dict(content=b'{"designation": "' + b"a" * 500_000 + b'"}',
                            headers={"content-type": "application/json"}), 413, ("JSON body larger than",)),
    ("wrong type", dict(json={"designation": 12}), 422, ("designation: expected a string",)),
    ("bad explain flag", dict(json={"designation": "x", "explain": "maybe"}), 422, ("explain: expected true or false",)),
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
        (dict(files=[("csv", ("new.csv", b",title,productid,imageid\n0,a,1,2\n", "text/csv"))]), 422,
         ("csv new.csv", "missing column 'designation'")),
        (dict(files=[("csv", ("new.csv", x.to_csv().replace(str(x["productid"].iloc[1]), "12ab").encode(),
                              "text/csv"))]), 422, ("csv new.csv", "productid")),
        (dict(files=[good_csv, ("images", ("../../etc/passwd", b"x", "image/jpeg"))]), 422,
         ("image_<imageid>_product_<productid>.jpg",)),
        (dict(files=[good_csv, ("images", (_image_name(x.iloc[0]), b"not a jpeg", "image/jpeg"))]), 415,
         ("images: image_",)),
        (dict(files=[good_csv], data={"explain": "true"}), 422, ("unknown field 'explain'",)),
        (dict(files=[("images", (_image_name(x.iloc[0]), _image_bytes(repo, x.iloc[0]), "image/jpeg"))]), 422,
         ("csv: expected one CSV file",)),
        (dict(files=[("csv", ("big.csv", pd.concat([x] * 11).reset_index(drop=True).to_csv().encode(), "text/csv"))]),
         413, ("55 rows", "50 limit")),
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


def test_gate_refuses_past_the_pending_limit():
    gate = Gate(2)
    gate.enter()
    gate.enter()
    with pytest.raises(RequestError, match="busy: 2 requests already waiting") as exc:
        gate.enter()
    assert exc.value.status == 503
    gate.leave()
    gate.enter()   # a slot freed is usable again


def test_limits_must_be_positive():
    from rakuten.errors import PipelineError

    with pytest.raises(PipelineError, match=r"--max-pending: 0, expected a positive number"):
        ServeLimits(max_pending=0)


def test_page_is_served_with_the_form(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for element in ('id="designation"', 'id="description"', 'id="image"', 'id="explain"', 'id="top"'):
        assert element in response.text

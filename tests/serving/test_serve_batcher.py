"""Dynamic batching of single-product requests (rakuten.serving.serve.batcher), on a fake predictor whose
answer for a row depends on that row only: which requests share a call, what each gets back, what a
failing row, a request given up and a shutdown do to the others; then the same through the HTTP app.
The real models, answer for answer against one at a time: tests/serving/test_serve.py."""

from __future__ import annotations

import io
import logging
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rakuten.core.errors import PipelineError
from rakuten.serving.predict import Prediction, prediction_table
from rakuten.serving.serve.app import create_app
from rakuten.serving.serve.batcher import Batcher, predict_together
from rakuten.serving.serve.limits import ServeLimits


def fake_proba(text: str, has_image: bool) -> np.ndarray:
    """27 probabilities that depend on the row's text and whether it has an image, nothing else."""
    rng = np.random.default_rng(zlib.crc32(f"{text}|{has_image}".encode()))
    return rng.dirichlet(np.ones(27) * 0.3)


class FakePredictor:
    """``predict_rows`` of :class:`~rakuten.serving.predict.Predictor`, on :func:`fake_proba`. Records the
    designations of each call; holds each call until ``release`` is set (set by default); fails a call
    holding the designation ``fail_on``, as a bad row fails a whole call of the real predictor."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on
        self.models = SimpleNamespace(members={"fake": None}, fused=SimpleNamespace(strategy="soft_vote"))

    def predict_rows(self, rows: pd.DataFrame, work_dir: Path) -> Prediction:
        self.entered.set()
        assert self.release.wait(10), "never released"
        self.calls.append(rows["designation"].tolist())
        assert rows["row_id"].tolist() == list(range(len(rows)))  # the cleaned images are named after them
        if self.fail_on in rows["designation"].tolist():
            raise PipelineError(f"row {rows['designation'].tolist().index(self.fail_on)}: unreadable text")
        ok = rows["image_ok"].to_numpy(bool)
        proba = np.stack([fake_proba(t, i) for t, i in zip(rows["designation"], ok)])
        used = ["text+image" if i else "text only (image missing)" for i in ok]
        table = prediction_table(rows["orig_index"].to_numpy(), proba, used, needs_review=proba.max(axis=1) < 0.5)
        return Prediction(rows.copy(), proba, table)


def row(text: str, row_id: int = 0, orig_index: int = 0, image_ok: bool = False) -> pd.DataFrame:
    return pd.DataFrame({"row_id": [row_id], "orig_index": [orig_index], "designation": [text], "image_ok": [image_ok]})


def held(fake: FakePredictor, batcher: Batcher) -> object:
    """Submit ``first`` and wait until the worker is inside its call, held there: what is submitted
    next queues up behind it. Returns the first request's future."""
    fake.release.clear()
    first = batcher.submit(row("first"))
    assert fake.entered.wait(5)
    return first


def test_waiting_requests_share_one_call_and_each_gets_its_own_row():
    fake = FakePredictor()
    batcher = Batcher(fake.predict_rows, max_batch_size=32, max_batch_delay_s=0)
    first = held(fake, batcher)
    futures = [batcher.submit(row(f"p{i}", row_id=10 + i, orig_index=100 + i, image_ok=i % 2 == 1)) for i in range(5)]
    fake.release.set()
    first.result(5)
    parts = [f.result(5) for f in futures]
    assert fake.calls == [["first"], ["p0", "p1", "p2", "p3", "p4"]]
    for i, part in enumerate(parts):
        assert part.table.index.tolist() == [100 + i] and part.frame["row_id"].tolist() == [10 + i]
        assert np.array_equal(part.proba, fake_proba(f"p{i}", i % 2 == 1)[None, :])
        alone = FakePredictor().predict_rows(row(f"p{i}", orig_index=100 + i, image_ok=i % 2 == 1), Path("."))
        pd.testing.assert_frame_equal(part.table, alone.table)
    assert batcher.stats.batches == 2 and batcher.stats.mean_batch_size() == 3.0
    batcher.close()


def test_a_batch_holds_at_most_max_batch_size_rows():
    fake = FakePredictor()
    batcher = Batcher(fake.predict_rows, max_batch_size=2, max_batch_delay_s=0)
    held(fake, batcher)
    futures = [batcher.submit(row(t)) for t in "abcde"]
    fake.release.set()
    [f.result(5) for f in futures]
    assert fake.calls == [["first"], ["a", "b"], ["c", "d"], ["e"]]
    batcher.close()


def test_the_first_request_waits_the_delay_for_company():
    """An idle model: a request arriving 0.2 s after the first joins its batch; the first waited the delay."""
    fake = FakePredictor()
    batcher = Batcher(fake.predict_rows, max_batch_size=8, max_batch_delay_s=0.6)
    start = time.monotonic()
    a = batcher.submit(row("a"))
    time.sleep(0.2)
    b = batcher.submit(row("b"))
    a.result(5), b.result(5)
    assert fake.calls == [["a", "b"]] and time.monotonic() - start >= 0.55
    batcher.close()


def test_without_a_delay_a_lone_request_goes_at_once():
    fake = FakePredictor()
    batcher = Batcher(fake.predict_rows, max_batch_size=8, max_batch_delay_s=0)
    batcher.submit(row("a")).result(5)  # nothing else ever comes
    assert fake.calls == [["a"]]
    batcher.close()


def test_a_failing_row_fails_its_own_request_only():
    """The batch's call fails: its requests are predicted again one by one, each its own outcome."""
    fake = FakePredictor(fail_on="bad")
    batcher = Batcher(fake.predict_rows, max_batch_size=8, max_batch_delay_s=0)
    held(fake, batcher)
    good1, bad, good2 = (batcher.submit(row(t)) for t in ("good1", "bad", "good2"))
    fake.release.set()
    for text, future in (("good1", good1), ("good2", good2)):
        pd.testing.assert_frame_equal(future.result(5).table, FakePredictor().predict_rows(row(text), Path(".")).table)
    with pytest.raises(PipelineError, match="^row 0: unreadable text$"):
        bad.result(5)
    assert fake.calls[:5] == [["first"], ["good1", "bad", "good2"], ["good1"], ["bad"], ["good2"]]
    assert batcher.stats.fallbacks == 1
    batcher.close()


def test_a_request_given_up_before_its_batch_is_not_predicted():
    fake = FakePredictor()
    batcher = Batcher(fake.predict_rows, max_batch_size=8, max_batch_delay_s=0)
    held(fake, batcher)
    a, gone, c = (batcher.submit(row(t)) for t in "abc")
    assert gone.cancel()
    fake.release.set()
    a.result(5), c.result(5)
    assert fake.calls == [["first"], ["a", "c"]]
    batcher.close()


def test_close_predicts_what_is_queued_then_stops_and_a_new_request_starts_it_again():
    fake = FakePredictor()
    batcher = Batcher(fake.predict_rows, max_batch_size=8, max_batch_delay_s=0)
    held(fake, batcher)
    queued = batcher.submit(row("queued"))
    worker = batcher._thread
    closing = threading.Thread(target=batcher.close)
    closing.start()
    fake.release.set()
    closing.join(5)
    assert queued.done() and queued.result().table.shape[0] == 1
    assert not worker.is_alive() and batcher._thread is None
    assert batcher.submit(row("later")).result(5).table.shape[0] == 1  # a new worker
    batcher.close()
    assert not any(t.name == "rakuten-batcher" for t in threading.enumerate())


def test_a_prediction_that_comes_back_reordered_is_refused():
    fake = FakePredictor()

    def reordered(rows: pd.DataFrame, work: Path) -> Prediction:
        out = fake.predict_rows(rows, work)
        return Prediction(out.frame.iloc[::-1], out.proba[::-1], out.table.iloc[::-1])

    with pytest.raises(PipelineError, match="other rows or in another order"):
        predict_together(reordered, [row("a"), row("b")])
    assert len(predict_together(fake.predict_rows, [row("a"), row("b")])) == 2


def test_bad_batcher_settings_are_refused():
    with pytest.raises(PipelineError, match="max_batch_size = 0"):
        Batcher(FakePredictor().predict_rows, 0, 0.01)


# ------------------------------------------------------------------------------------- over HTTP


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _send(client: TestClient, body: dict, image: bool):
    if image:
        return client.post("/predict", data=body, files={"image": ("p.png", _png(), "image/png")})
    return client.post("/predict", json=body)


REQUESTS = [
    ({"designation": "Piscine ronde"}, False),
    ({"designation": "Console portable", "description": "noire"}, True),
    ({"designation": ""}, True),  # the image only
    ({"designation": "", "description": "Lot de 3 livres"}, False),
    ({"designation": "Piscine ronde"}, True),
    ({"designation": "Jouet en bois"}, False),
]


def _concurrently(client: TestClient, requests: list[tuple[dict, bool]]) -> list:
    results: list = [None] * len(requests)

    def send(i: int) -> None:
        results[i] = _send(client, *requests[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_requests_are_batched_and_answered_as_alone(caplog):
    alone_fake = FakePredictor()
    with TestClient(create_app(alone_fake, ServeLimits(max_batch_size=1), metadata={})) as c:
        alone = [_send(c, *r).json() for r in REQUESTS]
        assert c.get("/health").json()["batching"] is None
    assert all(len(call) == 1 for call in alone_fake.calls)
    fake = FakePredictor()
    app = create_app(fake, ServeLimits(max_batch_size=8, max_batch_delay_ms=500), metadata={})
    with caplog.at_level(logging.INFO), TestClient(app) as c:
        results = _concurrently(c, REQUESTS)
        batcher = app.state.service.batcher
        assert [r.status_code for r in results] == [200] * len(REQUESTS)
        assert [r.json() for r in results] == alone
        assert batcher.stats.rows == len(REQUESTS) and batcher.stats.batches < len(REQUESTS)
        assert {"inputs_used": "text+image"}.items() <= results[1].json().items()
        counts = c.get("/health").json()["batching"]
        assert counts == {
            "max_batch_size": 8,
            "max_batch_delay_ms": 500.0,
            "batches": batcher.stats.batches,
            "rows": len(REQUESTS),
            "fallbacks": 0,
        }
    assert batcher._thread is None  # the app's shutdown stopped the worker, and said so
    assert f"batching stopped: 6 requests in {batcher.stats.batches} batches" in caplog.text


def test_a_bad_row_over_http_is_its_own_422_and_the_others_are_answered():
    fake = FakePredictor(fail_on="bad")
    app = create_app(fake, ServeLimits(max_batch_size=8, max_batch_delay_ms=500), metadata={})
    requests = [({"designation": t}, False) for t in ("good1", "bad", "good2")]
    with TestClient(app) as c:
        results = _concurrently(c, requests)
    assert [r.status_code for r in results] == [200, 422, 200], [r.text for r in results]
    assert results[1].json() == {"error": "row 0: unreadable text"}
    assert app.state.service.batcher.stats.fallbacks == 1


def test_past_max_pending_batched_requests_get_503():
    fake = FakePredictor()
    app = create_app(fake, ServeLimits(max_batch_size=8, max_batch_delay_ms=0, max_pending=1), metadata={})
    fake.release.clear()
    with TestClient(app) as c:
        first = threading.Thread(target=lambda: _send(c, {"designation": "a"}, False))
        first.start()
        assert fake.entered.wait(5)
        busy = _send(c, {"designation": "b"}, False)
        fake.release.set()
        first.join(10)
        assert busy.status_code == 503 and "busy: 1 requests already waiting" in busy.json()["error"]
        assert _send(c, {"designation": "c"}, False).status_code == 200  # the slot was given back

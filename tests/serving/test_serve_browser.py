"""End to end: `rakuten serve` started as users start it (the console command, on 127.0.0.1), its web
page opened in headless Chromium (Debian's, driven by Playwright), the form filled, a photo uploaded,
and the answer read off the page."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd
import pytest

from rakuten.contracts.classes import CLASS_LABELS
from tests.helpers.browser import chromium_page

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(repo: Path, log_path: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`rakuten serve` with ``options`` on the models of ``repo``, started from that folder on a free port,
    its output in ``log_path``: (url, process) once /health answers; stopped at the end.
    Shared with tests/serving/test_serve_load.py."""
    port = _free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rakuten.serving.cli", "serve", "--port", str(port), *options],
        cwd=repo,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rakuten serve exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("rakuten serve did not answer /health within 180 s")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def service(tiny_built_repo):
    """The service on the tiny project's models, started from the project folder; stopped at the end."""
    with running_service(tiny_built_repo, tiny_built_repo.parent / "serve.log") as (url, _):
        yield url, tiny_built_repo


def test_page_classifies_a_product_with_its_photo_and_explains_it(service):
    url, repo = service
    x = pd.read_csv(repo / "data/sample/X_test_update.csv", index_col=0)
    row = x.iloc[0]
    photo = repo / "data/sample/images/image_test" / f"image_{row['imageid']}_product_{row['productid']}.jpg"
    expected = httpx.post(
        f"{url}/predict",
        data={"designation": row["designation"]},
        files={"image": ("photo.jpg", photo.read_bytes(), "image/jpeg")},
        timeout=60,
    ).json()
    with chromium_page() as (page, seen):
        page.goto(url + "/")
        page.fill("#designation", row["designation"])
        page.set_input_files("#image", str(photo))
        assert page.locator("#explain").is_checked()
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        items = page.locator("#top li")
        assert items.count() == 3
        codes = [int(items.nth(i).get_attribute("data-code")) for i in range(3)]
        assert codes == [t["code"] for t in expected["top"]]
        first = items.nth(0).inner_text()
        assert CLASS_LABELS[codes[0]] in first and f"{100 * expected['top'][0]['proba']:.1f} %" in first
        assert page.inner_text("#inputs-used") == "text+image"
        badge = page.locator("#review")
        assert badge.inner_text() == ("needs review" if expected["needs_review"] else "auto-accept")
        assert badge.get_attribute("data-needs-review") == str(expected["needs_review"]).lower()
        assert badge.is_visible()
        models = page.locator("#explanations .model")
        shown = {models.nth(i).get_attribute("data-model") for i in range(models.count())}
        assert {"tfidf_svm", "camembert", "resnet50"} <= shown
        assert page.locator("[data-model=tfidf_svm] .chip").count() > 0
        assert page.locator("[data-model=camembert] .chip").count() > 0
        assert page.eval_on_selector("[data-model=resnet50] img.gradcam", "img => img.naturalWidth") > 0
        assert seen.problems == [], seen.problems

        # a request the service refuses: its one-line error is shown, the result hidden
        page.fill("#designation", "")
        page.set_input_files("#image", [])
        page.click("#submit")
        # a selector, not wait_for_function: that evals a string in the page, which its CSP forbids
        page.wait_for_selector("#error:not(:empty)", timeout=30_000)
        assert "no input" in page.inner_text("#error")
        assert page.locator("#result").is_hidden()
        assert seen.page_errors == []

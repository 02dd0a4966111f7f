"""Headless Chromium for the tests that open a page: the report file, the service's web page.

Why Debian's ``/usr/bin/chromium`` and not Playwright's own browser: the download is not available
offline (and would be one more thing to pin); Playwright drives any recent Chromium over CDP.
Why the flags: no sandbox (containers run as root), no GPU, and no background traffic (updates,
sync, QUIC probes), so that the only requests a test sees are the ones its page makes.

Usage::

    with chromium_page() as (page, seen):
        page.goto(url)
        assert not seen.console_errors and not seen.page_errors and not seen.failed_requests
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class Seen:
    """What went wrong while the page ran: console ``error`` messages, uncaught exceptions, and requests
    that failed or were answered 4xx/5xx (``"<status or failure> <url>"``); plus every URL requested."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """All of the above in one list (empty = a clean page load), for one readable assertion."""
        return (
            [f"console: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"request: {m}" for m in self.failed_requests]
        )


def require_chromium() -> None:
    """Fail, with the install line, where the browser is missing: tools/test.sh installs it when absent, and a
    skipped browser test would hide a broken page in CI."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} not found: install it with `apt-get install -y chromium` (tools/test.sh does it when absent)"
        )


def _watch(page, seen: Seen) -> None:
    page.on("console", lambda msg: seen.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: seen.page_errors.append(str(exc)))
    page.on("request", lambda req: seen.requests.append(req.url))
    page.on("requestfailed", lambda req: seen.failed_requests.append(f"{req.failure} {req.url}"))

    def on_response(resp) -> None:
        if resp.status >= 400:
            seen.failed_requests.append(f"{resp.status} {resp.url}")

    page.on("response", on_response)


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900, offline: bool = False) -> Iterator[tuple[object, Seen]]:
    """A fresh Playwright page in headless Chromium and what it has seen so far (:class:`Seen`).

    ``offline=True`` cuts the network of the context (a self-contained file must still render);
    leave it off for a page served on localhost. The browser is closed on exit, even on failure.
    """
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(ARGS))
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, offline=offline)
            page = context.new_page()
            seen = Seen()
            _watch(page, seen)
            yield page, seen
        finally:
            browser.close()

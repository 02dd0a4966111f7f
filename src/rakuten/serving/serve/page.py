"""The HTML the service sends: the web page (``GET /``) with its Content-Security-Policy, and ``/docs``.

Why its own module: the page is plain HTML + JS shipped in the package
(``rakuten/serving/static/index.html``) and its policy is derived from it, so that exactly its own
inline script and style run, and nothing the service sends loads code from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from importlib import resources


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

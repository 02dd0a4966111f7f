"""What every request of one app shares: the predictor, the limits, the model's gate, the answers
computed at start.

Why an object on ``app.state`` rather than closures in the app factory: the routes are then plain
module functions (:mod:`~rakuten.serving.serve.routes`, :mod:`~rakuten.serving.serve.single`,
:mod:`~rakuten.serving.serve.batch`), each readable and testable on its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from rakuten.serving.http_guards import RequestError
from rakuten.serving.predict import Predictor
from rakuten.serving.serve.batcher import Batcher
from rakuten.serving.serve.limits import ServeLimits


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


@dataclass(frozen=True)
class Service:
    """The state of one app: ``predictor`` (loaded once; one call at a time), ``gate`` (its waiting
    room), ``batcher`` (gathers concurrent single-product requests into one call; None when
    ``max_batch_size`` is 1), ``metadata`` (``GET /metadata``), the web page and its CSP (read once)."""

    predictor: Predictor
    limits: ServeLimits
    gate: Gate
    metadata: dict[str, Any]
    page: str
    page_csp: str
    batcher: Batcher | None = None


def service_of(request: Request) -> Service:
    """The :class:`Service` of the app that received ``request``."""
    return request.app.state.service

"""What one request and one client may cost ``rakuten serve``: the limits, each declared once.

Why declared with :func:`rakuten.core.config.knob` like the ``params.yaml`` sections: the default,
the help text and the bounds of a limit live in one place, from which ``rakuten serve`` builds its
options (``--max-image-mb`` ...; :mod:`rakuten.serving.cli`) and a params file's ``serve`` section is
checked (:func:`rakuten.core.config.parse_section`); the options override the section.
"""

from __future__ import annotations

from dataclasses import dataclass

from rakuten.core.config import ConfigError, check_value, iter_knobs, knob
from rakuten.core.errors import PipelineError

SECTION = "serve"


@dataclass(frozen=True)
class ServeLimits:
    """``serve``: what one request may cost, what one client may hold, how requests are batched.
    Runtime knobs: they bound the service and its batches, never what it predicts."""

    max_image_mb: float = knob(
        10.0, "largest accepted image upload, in MB (413 above)", lo=0, lo_open=True, runtime=True
    )
    max_image_pixels: int = knob(
        40_000_000,
        "largest accepted decoded image, width x height (413 above; guards against decompression bombs)",
        lo=1,
        runtime=True,
    )
    max_text_chars: int = knob(
        100_000, "longest accepted designation + description, in characters (413 above)", lo=1, runtime=True
    )
    max_batch_rows: int = knob(10_000, "most rows accepted in one batch CSV (413 above)", lo=1, runtime=True)
    max_batch_mb: float = knob(
        500.0, "largest accepted batch request, CSV + images, in MB (413 above)", lo=0, lo_open=True, runtime=True
    )
    chunk_rows: int = knob(256, "batch rows predicted, then streamed back, per chunk", lo=1, runtime=True)
    max_pending: int = knob(32, "requests allowed to wait for the model; more get 503 (busy)", lo=1, runtime=True)
    max_batch_size: int = knob(
        32,
        "most single-product requests predicted together in one call (dynamic batching); 1 = one at a time",
        lo=1,
        hi=4096,
        runtime=True,
    )
    max_batch_delay_ms: float = knob(
        10.0,
        "longest the first request of a batch waits for others to join it, in ms from its arrival; "
        "a full batch goes at once",
        lo=0,
        hi=10_000,
        runtime=True,
    )
    max_connections: int = knob(
        1000,
        "most open connections; past it the oldest ones still waiting for their "
        "request headers are closed (new ones at once past it + one accept batch)",
        lo=1,
        runtime=True,
    )
    header_timeout_s: float = knob(
        10.0,
        "seconds a connection may take to send its request headers; then it is closed",
        lo=0,
        lo_open=True,
        runtime=True,
    )
    body_timeout_s: float = knob(
        30.0,
        "seconds a request body may stall between two reads; then 408 and the connection is closed",
        lo=0,
        lo_open=True,
        runtime=True,
    )
    keep_alive_s: float = knob(
        5.0, "seconds an idle keep-alive connection stays open", lo=0, lo_open=True, runtime=True
    )
    log_every_s: float = knob(
        10.0,
        "the same server warning (accept errors, bad HTTP, clients gone) is "
        "logged at most once per this many seconds, with a count",
        lo=0,
        lo_open=True,
        runtime=True,
    )

    def __post_init__(self) -> None:
        """Limits built in code are checked like those parsed from a file or the command line: a 0
        would refuse every request, or time every connection out at once."""
        for name, _, _ in iter_knobs(type(self)):
            try:
                check_value(type(self), name, getattr(self, name), f"{SECTION}.{name}")
            except ConfigError as exc:
                raise PipelineError(str(exc)) from None

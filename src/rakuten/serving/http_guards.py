"""What one HTTP client can cost ``rakuten serve``: bodies, connections, log lines.

Why a module of its own: these guards sit below the application (an ASGI layer around FastAPI and a
uvicorn protocol class), know nothing of models or products, and are what a security review reads.

- :class:`Guard` counts every request body as it streams, with or without a ``Content-Length``, and
  stops it past the path's limit (413) or when it stalls (408), closing the connection; it also adds
  :data:`SECURITY_HEADERS` to every response.
- :func:`guarded_protocol` (:class:`ConnectionGuard`) closes connections that do not finish their
  request headers in time and caps the number of open connections; :func:`connection_budget` fits
  that cap under the open-file limit that :func:`raise_file_limit` raised.
- :class:`RateLimitFilter` keeps a flood of identical warnings to a few lines with counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

import anyio
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rakuten.core.errors import PipelineError

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A bad request: HTTP status and one line for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    # JSON answers, errors and the /docs page load nothing; the web page gets page_csp() instead
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class Guard:
    """The outermost ASGI layer, around FastAPI's own error middleware so that it sees every response.

    Why here and not in the endpoints: a limit checked against ``Content-Length`` is bypassed by a
    chunked body, and the multipart parser spools what it reads. So every ``http.request`` message is
    counted as it arrives, and past the path's limit (``body_limits``) the read raises the 413 while the
    parser is still consuming; a body that stalls longer than ``body_timeout_s`` between two reads raises
    a 408. Both close the connection (``Connection: close``): the unread rest is never drained. Every
    response gets :data:`SECURITY_HEADERS` (those it did not set itself)."""

    def __init__(self, app: ASGIApp, body_limits: dict[str, float], default_limit: float, body_timeout_s: float):
        self.app, self.body_limits, self.default_limit = app, body_limits, default_limit
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.body_limits.get(scope["path"], self.default_limit)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length", b"")
        has_body = (length.isdigit() and int(length) > 0) or b"chunked" in headers.get(
            b"transfer-encoding", b""
        ).lower()
        state = {"read": 0, "done": not has_body}

        async def guarded_receive() -> Message:
            if state["done"]:
                return await receive()
            try:
                with anyio.fail_after(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestError(
                    408, f"request body: nothing received for {self.body_timeout_s:g} s; expected the rest of the body"
                ) from None
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["read"] > limit:
                    raise RequestError(
                        413,
                        f"request body: over the {limit / 1e6:g} MB limit of {scope['path']} "
                        "(counted as it streams, with or without a length header)",
                    )
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", []))}
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out.setdefault(name, value)
                if not state["done"]:
                    out["connection"] = "close"  # answered before the whole body arrived: never drain the rest
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


ACCEPT_BACKLOG = 2048  # uvicorn's default listen backlog: also the most connections accepted in one go
FILE_RESERVE = 256  # descriptors kept for everything but connections (models, log, temporary files)


class ConnectionGuard:
    """The connection bounds of :func:`guarded_protocol`: a mixin placed before uvicorn's ``H11Protocol``.

    The class :func:`guarded_protocol` makes holds one server's settings (``max_connections``,
    ``header_timeout_s``, ``burst``) and counts (``open_count``; ``waiting``, the connections waiting
    for request headers, oldest first; ``closed``, by reason; ``trim_pending``), shared by its
    connections. Each connection: ``_counted`` (in ``open_count``), ``_awaiting`` (on the header
    clock, ``_timer``, since the cycle ``_marker``), ``_readable`` (read at least once)."""

    max_connections: int
    header_timeout_s: float
    burst: int
    open_count: int
    waiting: dict[Any, None]
    closed: dict[str, int]
    trim_pending: bool

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cls = type(self)
        self._counted, self._awaiting, self._timer, self._marker, self._readable = False, False, None, None, False
        if cls.open_count >= cls.max_connections + cls.burst:
            cls.closed["refused"] += 1
            log.warning(
                "%d connections open: a new one was closed at once (--max-connections %d plus %d accepted in one go)",
                cls.open_count,
                cls.max_connections,
                cls.burst,
            )
            transport.abort()
            return
        cls.open_count += 1
        self._counted = True
        super().connection_made(transport)
        self._await_headers()
        # the socket is first read in the next loop turn, before that turn's timers run
        self.loop.call_soon(setattr, self, "_readable", True)
        if cls.open_count > cls.max_connections and not cls.trim_pending:
            cls.trim_pending = True
            self.loop.call_later(0, cls._trim)  # a timer: runs after the next turn's reads

    @classmethod
    def _trim(cls) -> None:
        """Close the oldest idle connections that were read at least once, down to the cap."""
        cls.trim_pending = False
        evicted = 0
        for conn in list(cls.waiting):
            if cls.open_count <= cls.max_connections:
                break
            if conn._readable:
                conn._forget()
                conn.transport.abort()
                evicted += 1
        if evicted:
            cls.closed["evicted"] += evicted
            log.warning(
                "over %d connections open: closed %d waiting for their request headers (--max-connections)",
                cls.max_connections,
                evicted,
            )
        if cls.open_count > cls.max_connections and any(not c._readable for c in cls.waiting):
            cls.trim_pending = True  # some were accepted too recently to judge: look again next turn
            asyncio.get_running_loop().call_later(0, cls._trim)

    def _await_headers(self) -> None:
        """Start the header clock: until a new request cycle starts, this connection is idle."""
        type(self).waiting[self] = None
        self._awaiting, self._marker = True, self.cycle
        self._timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _stop_waiting(self) -> None:
        type(self).waiting.pop(self, None)
        self._awaiting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _forget(self) -> None:
        if self._counted:
            type(self).open_count -= 1
            self._counted = False
        self._stop_waiting()

    def _header_timeout(self) -> None:
        self._timer = None
        if self._awaiting and not self.transport.is_closing():
            type(self).closed["header_timeout"] += 1
            log.info(
                "closed a connection without complete request headers after %g s (--header-timeout-s)",
                self.header_timeout_s,
            )
            self._forget()
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self._awaiting and self.cycle is not self._marker:  # request headers complete: a cycle began
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (
            not self.transport.is_closing()
            and not self._awaiting
            and (self.cycle is None or self.cycle.response_complete)
        ):
            self._await_headers()  # kept alive: the next request's headers are on the clock too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made: nothing was set up
            return
        self._forget()
        super().connection_lost(exc)


def guarded_protocol(
    max_connections: int, header_timeout_s: float, burst: int = ACCEPT_BACKLOG
) -> type[asyncio.Protocol]:
    """A uvicorn HTTP/1.1 protocol class (h11) that bounds what idle connections can hold.

    uvicorn has a keep-alive timeout, but none for the request headers of a connection, and no cap on
    open connections (``limit_concurrency`` answers 503 yet keeps every socket open): thousands of
    connections that never finish their headers exhaust the file limit. Here (:class:`ConnectionGuard`):

    - a connection whose request headers are not complete ``header_timeout_s`` after it opened (or
      after its last response) is closed;
    - past ``max_connections`` open ones, the oldest connections still waiting for their headers are
      closed, within one turn of the event loop. Only those that had a chance to be read: asyncio
      accepts up to ``burst`` connections at once, before reading any, and a client that sent its
      request at once must not be closed for the idle ones accepted in the same go;
    - at ``max_connections + burst`` open, a new connection is closed at once (the descriptors stay
      bounded even when every connection has a request under way).

    One class per server: the counts are class attributes, shared by its connections."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    server = {
        "max_connections": max_connections,
        "header_timeout_s": header_timeout_s,
        "burst": burst,
        "open_count": 0,
        "waiting": {},
        "closed": {"refused": 0, "evicted": 0, "header_timeout": 0},
        "trim_pending": False,
    }
    return type("GuardedH11Protocol", (ConnectionGuard, H11Protocol), server)


class RateLimitFilter(logging.Filter):
    """Lets through the first record of each kind (logger + message template) per ``every_s`` seconds and
    counts the others, reported on the next one let through. Why: an attacker can trigger the same
    warning thousands of times a second (refused connections, bad HTTP, accept failures); the log must
    stay a few lines that still say how big the flood was."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic, max_kinds: int = 1000):
        super().__init__()
        self.every_s, self.clock, self.max_kinds = every_s, clock, max_kinds
        self._seen: dict[tuple[str, str], list] = {}  # kind -> [time let through, suppressed since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg).split("\n", 1)[0][:200])
        now = self.clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen[0] < self.every_s:
                seen[1] += 1
                return False
            if seen is None and len(self._seen) >= self.max_kinds:
                self._seen.clear()  # pre-formatted messages make new kinds: forget, never grow
            self._seen[kind] = [now, 0]
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} [and {seen[1]} more like this in the last {now - seen[0]:.0f} s]"
        return True


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler for errors outside any task: an accept failure (out of file descriptors) is one
    warning line, no traceback (and rate-limited); anything else goes to asyncio's default handler."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
        log.warning("cannot accept connections: %s; asyncio retries in 1 s", exc.strerror or exc)
        return
    loop.default_exception_handler(context)


def raise_file_limit() -> int:
    """Raise this process' open-file soft limit to its hard limit: every connection is a descriptor, and
    the soft default (often 1024) is far below what the machine allows. Returns the limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_budget(files: int, max_connections: int) -> tuple[int, int]:
    """(connections, accept batch) that fit an open-file limit of ``files``. Why: accept() must never run
    out of descriptors, as CPython 3.11's accept loop goes on after EMFILE, one failure (and one retry
    timer) per queued connection, thousands a second. Connections get what the models, the log and the
    uploads' temporary files (:data:`FILE_RESERVE`) leave; the batch shrinks first, to 64.

    Open at once, at worst: the connections (the cap plus one batch, :func:`guarded_protocol`), one
    batch accepted but not yet handed to a protocol, and up to two batches closed (refused, made room
    for) whose sockets asyncio releases in the next loop turn: the cap plus four batches."""
    spare = files - FILE_RESERVE
    burst = ACCEPT_BACKLOG
    if max_connections + 4 * burst > spare:
        burst = max(64, min(burst, (spare - max_connections) // 4))
        max_connections = max(1, min(max_connections, spare - 4 * burst))
    return max_connections, burst


def run_server(app: ASGIApp, host: str, port: int, limits: Any) -> None:
    """uvicorn, with the connection guards (:func:`guarded_protocol`), the keep-alive timeout, the file
    limit raised, and rate-limited logging of what clients can flood (:class:`RateLimitFilter`).
    ``limits``: :class:`rakuten.serving.serve.limits.ServeLimits` (its connection, timeout and log knobs)."""
    import uvicorn

    files = raise_file_limit()
    max_connections, burst = connection_budget(files, limits.max_connections)
    if max_connections < limits.max_connections:
        log.warning(
            "open-file limit %d: at most %d connections (+%d accepted in one go) instead of --max-connections %d",
            files,
            max_connections,
            burst,
            limits.max_connections,
        )

    class Server(uvicorn.Server):
        async def serve(self, sockets=None) -> None:
            asyncio.get_running_loop().set_exception_handler(_loop_exception)
            await super().serve(sockets)

    # loop="asyncio": guarded_protocol relies on asyncio's order of callbacks, reads and timers in a turn
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        http=guarded_protocol(max_connections, limits.header_timeout_s, burst),
        loop="asyncio",
        backlog=burst,
        timeout_keep_alive=limits.keep_alive_s,
    )  # type: ignore[arg-type]
    throttle = RateLimitFilter(limits.log_every_s)  # after Config: its logging setup would drop the filters
    for name in ("rakuten.serving.serve", __name__, "uvicorn.error", "asyncio"):
        logging.getLogger(name).addFilter(throttle)
    log.info(
        "limits: %d connections (+%d accepted in one go; open-file limit %d), headers within %g s, body "
        "stalls under %g s, keep-alive %g s",
        max_connections,
        burst,
        files,
        limits.header_timeout_s,
        limits.body_timeout_s,
        limits.keep_alive_s,
    )
    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise PipelineError(f"the service did not start on {host}:{port} (see the lines above)")

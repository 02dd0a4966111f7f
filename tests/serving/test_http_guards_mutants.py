"""What one HTTP client can cost the service (rakuten.serving.http_guards), in process (docs/mutation.md).

The ASGI layer (``Guard``) runs on hand-made ASGI apps and messages under ``asyncio.run``. The uvicorn
protocol class (``guarded_protocol``) runs on a fake event loop (its ``call_soon`` and ``call_later``
are recorded and run by hand) and fake transports, so the order of accepts, first reads and timers is
chosen by the test and nothing waits. ``run_server`` runs against a fake ``uvicorn.Server``/``Config``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest

from rakuten.core.errors import PipelineError
from rakuten.serving import http_guards as hg
from tests.helpers.guards import no_hang  # noqa: F401 (fixtures)

SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]


# --------------------------------------------------------------------------- constants and errors


def test_request_error_and_constants():
    err = hg.RequestError(413, "too big")
    assert (err.status, err.message, str(err), err.args) == (413, "too big", "too big", ("too big",))
    assert hg.SECURITY_HEADERS == {k.decode(): v.decode() for k, v in SECURITY}
    assert (hg.ACCEPT_BACKLOG, hg.FILE_RESERVE) == (2048, 256)


# --------------------------------------------------------------------------- Guard


def http_scope(path="/predict", headers=()):
    return {"type": "http", "path": path, "headers": list(headers)}


def run_guard(scope, messages, *, limits=None, default=1000, timeout=5.0, app_headers=(), stall=False):
    """Runs ``Guard`` around an app that reads the whole body, then answers; returns (what the app read,
    the messages sent, the RequestError raised or None)."""
    incoming = list(messages)
    sent, read = [], []

    async def receive():
        if not incoming:
            if stall:
                await asyncio.sleep(10)
            return {"type": "http.disconnect"}
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    async def app(got, receive, send):
        assert got is scope
        try:
            while True:
                message = await receive()
                read.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        finally:
            await send({"type": "http.response.start", "status": 200, "headers": list(app_headers)})
            await send({"type": "http.response.body", "body": b"ok"})

    guard = hg.Guard(app, limits or {}, default, timeout)
    error = None
    try:
        asyncio.run(guard(scope, receive, send))
    except hg.RequestError as exc:
        error = exc
    return read, sent, error


def test_guard_passes_other_scopes_through_untouched():
    seen = []

    async def app(scope, receive, send):
        seen.append((scope, receive, send))

    async def receive():
        return {}

    async def send(message):
        pass

    scope = {"type": "lifespan"}
    asyncio.run(hg.Guard(app, {}, 0, 1.0)(scope, receive, send))
    assert seen == [(scope, receive, send)]
    assert hg.Guard(app, {"/a": 1}, 2, 3.0).__dict__ == {
        "app": app,
        "body_limits": {"/a": 1},
        "default_limit": 2,
        "body_timeout_s": 3.0,
    }


def test_a_body_at_the_limit_passes_and_gets_the_security_headers():
    body = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"y" * 400},
    ]
    read, sent, error = run_guard(http_scope(headers=[(b"Content-Length", b"1000")]), body)
    assert error is None and read == body
    assert sent[0] == {"type": "http.response.start", "status": 200, "headers": SECURITY}
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}


def test_one_byte_over_the_limit_is_a_413_counted_as_it_streams():
    body = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"y" * 401, "more_body": True},
        {"type": "http.request", "body": b"never read"},
    ]
    for headers in ([(b"content-length", b"1001")], [(b"Transfer-Encoding", b"Chunked")]):
        read, sent, error = run_guard(http_scope(headers=headers), body)
        assert (error.status, error.message) == (
            413,
            "request body: over the 0.001 MB limit of /predict (counted "
            "as it streams, with or without a length header)",
        )
        assert read == body[:1]
        # answered before the body ended: the connection is closed, never drained
        assert sent[0]["headers"] == SECURITY + [(b"connection", b"close")]


def test_the_limit_is_the_paths_own():
    body = [{"type": "http.request", "body": b"x" * 1_500_001}]
    read, sent, error = run_guard(
        http_scope("/upload", [(b"content-length", b"1500001")]),
        body,
        limits={"/upload": 1_500_000, "/other": 10**9},
        default=10**9,
    )
    assert error.message.startswith("request body: over the 1.5 MB limit of /upload (")
    read, sent, error = run_guard(
        http_scope("/upload", [(b"content-length", b"1500000")]),
        [{"type": "http.request", "body": b"x" * 1_500_000}],
        limits={"/upload": 1_500_000},
        default=10,
    )
    assert error is None
    read, sent, error = run_guard(
        http_scope("/small", [(b"content-length", b"11")]),
        [{"type": "http.request", "body": b"x" * 11}],
        limits={"/upload": 10**9},
        default=10,
    )
    assert error.message.startswith("request body: over the 1e-05 MB limit of /small (")


def test_messages_without_body_or_more_body_keys():
    body = [{"type": "http.request", "more_body": True}, {"type": "http.request", "body": b"abc"}]
    read, sent, error = run_guard(http_scope(headers=[(b"content-length", b"3")]), body, default=3)
    assert error is None and read == body and sent[0]["headers"] == SECURITY
    read, sent, error = run_guard(
        http_scope(headers=[(b"content-length", b"3")]), [{"type": "http.request", "body": b"abcd"}], default=3
    )
    assert error.status == 413


def test_a_disconnect_is_not_counted_and_does_not_end_the_body():
    read, sent, error = run_guard(
        http_scope(headers=[(b"content-length", b"5")]),
        [{"type": "http.disconnect", "body": b"x" * 50, "more_body": False}],
        default=10,
    )
    assert error is None and read == [{"type": "http.disconnect", "body": b"x" * 50, "more_body": False}]
    assert sent[0]["headers"] == SECURITY + [(b"connection", b"close")]


def test_without_a_body_reads_are_neither_counted_nor_timed():
    big = [{"type": "http.request", "body": b"x" * 50}]
    for headers in (
        [],
        [(b"content-length", b"0")],
        [(b"content-length", b"abc")],
        [(b"content-length", b"-5")],
        [(b"transfer-encoding", b"gzip")],
    ):
        read, sent, error = run_guard(http_scope(headers=headers), big, default=10)
        assert error is None and read == big and sent[0]["headers"] == SECURITY, headers
    read, sent, error = run_guard(http_scope(headers=[(b"content-length", b"1")]), big, default=10)
    assert error.status == 413
    read, sent, error = run_guard(http_scope(headers=[(b"transfer-encoding", b"gzip, chunked")]), big, default=10)
    assert error.status == 413

    async def slow():
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b""}

    async def app(scope, receive, send):
        await receive()

    asyncio.run(hg.Guard(app, {}, 10, 0.01)(http_scope(), slow, None))  # no body: no clock on its reads


def test_a_scope_without_headers_has_no_body():
    read, sent, error = run_guard(
        {"type": "http", "path": "/predict"}, [{"type": "http.request", "body": b"x" * 50}], default=10
    )
    assert error is None and sent[0]["headers"] == SECURITY


def test_an_app_header_is_kept_and_the_apps_message_is_not_changed():
    app_headers = [(b"x-frame-options", b"SAMEORIGIN"), (b"content-type", b"text/html")]
    read, sent, error = run_guard(http_scope(), [], app_headers=app_headers)
    assert sent[0]["headers"] == app_headers + [h for h in SECURITY if h[0] != b"x-frame-options"]
    assert app_headers == [(b"x-frame-options", b"SAMEORIGIN"), (b"content-type", b"text/html")]

    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204})

    async def record(message):
        sent.append(message)

    asyncio.run(hg.Guard(app, {}, 10, 1.0)(http_scope(), None, record))
    assert sent == [{"type": "http.response.start", "status": 204, "headers": SECURITY}]


def test_a_stalled_body_is_a_408():
    started = time.monotonic()
    read, sent, error = run_guard(
        http_scope(headers=[(b"content-length", b"10")]),
        [{"type": "http.request", "body": b"x", "more_body": True}],
        timeout=0.05,
        stall=True,
    )
    assert time.monotonic() - started < 2
    assert (error.status, error.message) == (
        408,
        "request body: nothing received for 0.05 s; expected the rest of the body",
    )
    assert error.__suppress_context__ and error.__cause__ is None
    assert sent[0]["headers"] == SECURITY + [(b"connection", b"close")]


# --------------------------------------------------------------------------- RateLimitFilter


def record(msg, name="rakuten.serving.serve"):
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


def test_rate_limit_defaults():
    f = hg.RateLimitFilter(2.0)
    assert (f.every_s, f.clock, f.max_kinds, f._seen) == (2.0, time.monotonic, 1000, {})
    assert isinstance(f, logging.Filter)


def test_first_of_a_kind_passes_then_counts_until_the_window_ends():
    now = [100.0]
    f = hg.RateLimitFilter(10.0, clock=lambda: now[0])
    first = record("refused %d")
    assert f.filter(first) is True and first.msg == "refused %d"
    assert [f.filter(record("refused %d")) for _ in range(3)] == [False, False, False]
    assert f.filter(record("refused %d", name="uvicorn.error")) is True  # another logger: another kind
    now[0] = 109.9
    assert f.filter(record("refused %d")) is False
    now[0] = 110.0  # exactly every_s later: let through
    late = record("refused %d")
    assert f.filter(late) is True
    assert late.msg == "refused %d [and 4 more like this in the last 10 s]"
    assert f._seen[("rakuten.serving.serve", "refused %d")] == [110.0, 0]
    now[0] = 121.6
    again = record("refused %d")
    assert f.filter(again) is True and again.msg == "refused %d"  # none left out: unchanged
    now[0] = 121.7
    assert f.filter(record("refused %d")) is False
    now[0] = 140.0
    last = record("refused %d")
    assert f.filter(last) is True and last.msg == "refused %d [and 1 more like this in the last 18 s]"


def test_the_kind_is_the_first_line_cut_to_200_characters():
    now = [0.0]
    f = hg.RateLimitFilter(5.0, clock=lambda: now[0])
    assert f.filter(record("bad\nline one")) is True
    assert f.filter(record("bad\nline two")) is False
    assert f.filter(record("bad")) is False
    assert f.filter(record("bad\nline\nthree")) is False
    assert f.filter(record("bad ")) is True
    long = "a" * 200
    assert f.filter(record(long + "b")) is True
    assert f.filter(record(long + "c")) is False
    assert f.filter(record("a" * 199 + "c")) is True
    assert f.filter(record(ValueError("x\ny"))) is True  # msg need not be a str
    assert f.filter(record("x")) is False
    assert set(f._seen) == {
        ("rakuten.serving.serve", "bad"),
        ("rakuten.serving.serve", "bad "),
        ("rakuten.serving.serve", long),
        ("rakuten.serving.serve", "a" * 199 + "c"),
        ("rakuten.serving.serve", "x"),
    }


def test_kinds_are_forgotten_past_max_kinds():
    now = [0.0]
    f = hg.RateLimitFilter(5.0, clock=lambda: now[0], max_kinds=2)
    assert [f.filter(record(m)) for m in ("a", "b", "a")] == [True, True, False]
    assert f.filter(record("c")) is True  # a third kind: the table starts over
    assert set(f._seen) == {("rakuten.serving.serve", "c")}
    assert f.filter(record("a")) is True
    assert f.filter(record("c")) is False  # known kinds do not clear it
    assert set(f._seen) == {("rakuten.serving.serve", "c"), ("rakuten.serving.serve", "a")}
    g = hg.RateLimitFilter(5.0, clock=lambda: now[0], max_kinds=3)
    assert [g.filter(record(m)) for m in ("a", "b", "c", "a")] == [True, True, True, False]


# --------------------------------------------------------------------------- the loop's exception handler


class Loop:
    def __init__(self):
        self.defaults = []

    def default_exception_handler(self, context):
        self.defaults.append(context)


def test_accept_failures_are_one_warning_line(caplog):
    loop = Loop()
    with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
        hg._loop_exception(
            loop, {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
        )
        hg._loop_exception(loop, {"message": "accept failed", "exception": OSError("no strerror")})
    assert loop.defaults == []
    assert [r.getMessage() for r in caplog.records] == [
        "cannot accept connections: Too many open files; asyncio retries in 1 s",
        "cannot accept connections: no strerror; asyncio retries in 1 s",
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_anything_else_goes_to_asyncios_handler():
    loop = Loop()
    others = [
        {"message": "Task exception was never retrieved", "exception": OSError(24, "x")},
        {"message": "socket.accept() failed", "exception": ValueError("x")},
        {"message": "socket.accept() failed"},
        {"exception": OSError(24, "x")},
    ]
    for context in others:
        hg._loop_exception(loop, context)
    assert loop.defaults == others


# --------------------------------------------------------------------------- file limit and budget


class Limits:
    def __init__(self, monkeypatch, soft, hard, fails=None):
        import resource

        self.calls, self.value, self.fails = [], (soft, hard), fails
        monkeypatch.setattr(resource, "getrlimit", self.get)
        monkeypatch.setattr(resource, "setrlimit", self.set)

    def get(self, which):
        import resource

        assert which == resource.RLIMIT_NOFILE
        return self.value

    def set(self, which, value):
        self.calls.append((which, value))
        if self.fails:
            raise self.fails


def test_the_soft_file_limit_is_raised_to_the_hard_one(monkeypatch, caplog):
    import resource

    inf = resource.RLIM_INFINITY
    limits = Limits(monkeypatch, 1024, 4096)
    assert hg.raise_file_limit() == 4096
    assert limits.calls == [(resource.RLIMIT_NOFILE, (4096, 4096))]
    limits = Limits(monkeypatch, 1024, inf)
    assert hg.raise_file_limit() == 1 << 20
    assert limits.calls == [(resource.RLIMIT_NOFILE, (1 << 20, inf))]
    for soft, hard in ((4096, 4096), (3 << 20, inf), (inf, inf), ((1 << 20), inf)):
        limits = Limits(monkeypatch, soft, hard)
        assert hg.raise_file_limit() == soft and limits.calls == [], (soft, hard)
    for error in (ValueError("not allowed"), OSError(1, "Operation not permitted")):
        limits = Limits(monkeypatch, 1024, 4096, fails=error)
        with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
            assert hg.raise_file_limit() == 1024
        assert limits.calls == [(resource.RLIMIT_NOFILE, (4096, 4096))]
    assert [r.getMessage() for r in caplog.records] == [
        "cannot raise the open-file limit from 1024 to 4096: not allowed",
        "cannot raise the open-file limit from 1024 to 4096: [Errno 1] Operation not permitted",
    ]


@pytest.mark.parametrize(
    "files, wanted, expected",
    [
        (1_048_576, 1000, (1000, 2048)),
        (256 + 1000 + 4 * 2048, 1000, (1000, 2048)),  # exactly fits
        (256 + 1000 + 4 * 2048 - 1, 1000, (1000, 2047)),  # one short: the batch shrinks first
        (4097, 1000, (1000, 710)),
        (1456, 1000, (944, 64)),  # the batch at its floor of 64: then the cap
        (1024, 1000, (512, 64)),
        (300, 10, (1, 64)),
        (256 + 256 + 1, 1, (1, 64)),
    ],
)
def test_connection_budget(files, wanted, expected):
    got = hg.connection_budget(files, wanted)
    assert got == expected and all(type(v) is int for v in got)


# --------------------------------------------------------------------------- guarded_protocol


class Handle:
    def __init__(self, delay, fn, args):
        self.delay, self.fn, self.args, self.cancelled = delay, fn, args, False

    def cancel(self):
        self.cancelled = True


class Task:
    def add_done_callback(self, fn):
        pass


class FakeLoop:
    """Records callbacks; ``turn()`` runs the call_soon ones (the reads of a turn), ``timers(0)`` the due timers."""

    def __init__(self):
        self.soon, self.later = [], []

    def set_exception_handler(self, handler):
        self.handler = handler

    def call_soon(self, fn, *args):
        self.soon.append((fn, args))

    def call_later(self, delay, fn, *args):
        handle = Handle(delay, fn, args)
        self.later.append(handle)
        return handle

    def create_task(self, coro, **kwargs):
        coro.close()
        return Task()

    def turn(self):
        soon, self.soon = self.soon, []
        for fn, args in soon:
            fn(*args)

    def timers(self, delay):
        due = [h for h in self.later if h.delay == delay and not h.cancelled]
        self.later = [h for h in self.later if h not in due]
        for h in due:
            h.fn(*h.args)
        return len(due)


class Transport:
    def __init__(self):
        self.closing, self.aborted, self.closed, self.written = False, False, False, b""

    def get_extra_info(self, name, default=None):
        return default

    def abort(self):
        self.aborted = self.closing = True

    def close(self):
        self.closed = self.closing = True

    def is_closing(self):
        return self.closing

    def write(self, data):
        self.written += data

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@pytest.fixture
def server(monkeypatch):
    import uvicorn
    from uvicorn.server import ServerState

    async def app(scope, receive, send):  # never run: the fake loop closes its tasks
        pass

    loop = FakeLoop()
    monkeypatch.setattr(hg, "asyncio", SimpleNamespace(get_running_loop=lambda: loop))
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_keep_alive=5)
    state = ServerState()

    def connect(cls):
        conn = cls(config, state, {}, _loop=loop)
        transport = Transport()
        conn.connection_made(transport)
        return conn, transport

    return SimpleNamespace(loop=loop, connect=connect)


def respond(conn):
    async def go():
        await conn.cycle.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await conn.cycle.send({"type": "http.response.body", "body": b"ok"})

    asyncio.run(go())


def test_each_connection_is_counted_and_on_the_header_clock(server):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    assert issubclass(P, __import__("uvicorn.protocols.http.h11_impl", fromlist=["H11Protocol"]).H11Protocol)
    assert (P.open_count, P.waiting, P.closed, P.trim_pending) == (
        0,
        {},
        {"refused": 0, "evicted": 0, "header_timeout": 0},
        False,
    )
    conn, transport = server.connect(P)
    assert P.open_count == 1 and list(P.waiting) == [conn] and P.waiting[conn] is None
    assert (conn._counted, conn._awaiting, conn._readable, conn._marker) == (True, True, False, None)
    assert [(h.delay, h.fn, h.args) for h in server.loop.later] == [(0.5, conn._header_timeout, ())]
    assert conn._timer is server.loop.later[0]
    assert conn.transport is transport and not transport.closing
    server.loop.turn()
    assert conn._readable is True
    Q = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    assert Q.open_count == 0 and Q.waiting == {} and Q.closed["refused"] == 0  # one set of counts per class


def test_headers_not_complete_in_time_close_the_connection(server, caplog):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    conn, transport = server.connect(P)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")  # not finished
    assert conn._awaiting and conn in P.waiting
    with caplog.at_level(logging.INFO, logger="rakuten.serving.http_guards"):
        assert server.loop.timers(0.5) == 1
    assert transport.closed and not transport.aborted
    assert (P.open_count, P.waiting, P.closed["header_timeout"]) == (0, {}, 1)
    assert (conn._timer, conn._awaiting, conn._counted) == (None, False, False)
    assert [r.getMessage() for r in caplog.records] == [
        "closed a connection without complete request headers after 0.5 s (--header-timeout-s)"
    ]
    conn.connection_lost(None)  # counted once only
    assert P.open_count == 0
    other, _ = server.connect(P)
    server.loop.timers(0.5)
    assert P.closed["header_timeout"] == 2


def test_connection_lost_with_an_error(server):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    conn, transport = server.connect(P)
    conn.connection_lost(ConnectionResetError())
    assert P.open_count == 0 and P.waiting == {} and not transport.closed  # uvicorn closes only on a clean loss


def test_a_late_timer_on_a_closing_or_served_connection_does_nothing(server):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    conn, transport = server.connect(P)
    transport.closing = True
    conn._header_timeout()
    assert conn._timer is None and P.open_count == 1 and P.closed["header_timeout"] == 0 and not transport.closed
    conn2, transport2 = server.connect(P)
    conn2._awaiting = False
    conn2._header_timeout()
    assert P.open_count == 2 and P.closed["header_timeout"] == 0 and not transport2.closed
    assert conn2 in P.waiting


def test_complete_headers_stop_the_clock_and_a_kept_alive_connection_restarts_it(server):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    conn, transport = server.connect(P)
    timer = conn._timer
    conn.data_received(b"GET / HTTP/1.1\r\n")
    assert conn._awaiting and conn in P.waiting and not timer.cancelled
    conn.data_received(b"Host: x\r\n\r\n")
    assert conn.cycle is not None
    assert not conn._awaiting and conn not in P.waiting and timer.cancelled and conn._timer is None
    assert P.open_count == 1
    respond(conn)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert conn._awaiting and list(P.waiting) == [conn] and conn._marker is conn.cycle
    assert conn._timer.delay == 0.5 and conn._timer.fn == conn._header_timeout and not conn._timer.cancelled
    conn.data_received(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection's next request
    assert not conn._awaiting and conn not in P.waiting
    conn.connection_lost(None)
    assert P.open_count == 0 and P.waiting == {}


def test_no_clock_after_a_response_on_a_closing_connection(server):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    conn, transport = server.connect(P)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    respond(conn)
    assert transport.closed and not conn._awaiting and P.waiting == {}


def test_a_pipelined_request_under_way_is_not_on_the_clock(server):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    conn, transport = server.connect(P)
    conn.data_received(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = conn.cycle
    respond(conn)
    assert conn.cycle is not first and not conn.cycle.response_complete
    assert not conn._awaiting and P.waiting == {}
    respond(conn)  # then idle: on the clock
    assert conn._awaiting and list(P.waiting) == [conn]


def test_past_the_cap_the_oldest_idle_connections_that_were_read_make_room(server, caplog):
    P = hg.guarded_protocol(max_connections=2, header_timeout_s=0.5, burst=3)
    loop = server.loop
    a, ta = server.connect(P)
    b, tb = server.connect(P)
    assert P.trim_pending is False and [h.delay for h in loop.later] == [0.5, 0.5]
    loop.turn()  # a and b read once
    c, tc = server.connect(P)  # 3 open: over the cap of 2
    assert P.trim_pending is True and [(h.delay, h.fn) for h in loop.later[2:]] == [
        (0.5, c._header_timeout),
        (0, P._trim),
    ]
    d, td = server.connect(P)
    assert len([h for h in loop.later if h.delay == 0]) == 1  # one trim pending at a time
    b.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # b has a request under way
    with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
        assert loop.timers(0) == 1
    # a was read and is idle: closed; b is busy; c and d were never read: kept, and looked at again next turn
    assert ta.aborted and not (tb.aborted or tc.aborted or td.aborted)
    assert P.open_count == 3 and list(P.waiting) == [c, d] and P.closed["evicted"] == 1
    assert (a._counted, a._awaiting) == (False, False) and a._timer is None
    assert [r.getMessage() for r in caplog.records] == [
        "over 2 connections open: closed 1 waiting for their request headers (--max-connections)"
    ]
    assert P.trim_pending is True and [(h.delay, h.fn) for h in loop.later if h.delay == 0] == [(0, P._trim)]
    loop.turn()  # c and d read
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
        assert loop.timers(0) == 1
    assert tc.aborted and not td.aborted and P.open_count == 2 and list(P.waiting) == [d]
    assert P.closed == {"refused": 0, "evicted": 2, "header_timeout": 0} and P.trim_pending is False
    assert [h for h in loop.later if h.delay == 0] == []
    a.connection_lost(None)  # the aborted ones report their loss later
    c.connection_lost(None)
    assert P.open_count == 2


def test_a_trim_closes_several_at_once_and_stops_at_the_cap(server, caplog):
    P = hg.guarded_protocol(max_connections=2, header_timeout_s=0.5, burst=5)
    loop = server.loop
    conns = [server.connect(P) for _ in range(4)]
    loop.turn()
    late, tlate = server.connect(P)  # not read yet
    with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
        assert loop.timers(0) == 1
    assert [t.aborted for _, t in conns] == [True, True, True, False] and not tlate.aborted
    assert P.open_count == 2 and P.closed["evicted"] == 3
    assert [r.getMessage() for r in caplog.records] == [
        "over 2 connections open: closed 3 waiting for their request headers (--max-connections)"
    ]
    # at the cap, with one connection not read yet: no further trim
    assert P.trim_pending is False and [h for h in loop.later if h.delay == 0] == []


def test_a_trim_with_nothing_to_close_logs_nothing(server, caplog):
    P = hg.guarded_protocol(max_connections=1, header_timeout_s=0.5, burst=3)
    loop = server.loop
    a, ta = server.connect(P)
    b, tb = server.connect(P)
    with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
        a.connection_lost(None)  # back under the cap before the trim
        loop.turn()
        assert loop.timers(0) == 1
    assert not tb.aborted and P.closed["evicted"] == 0 and caplog.records == [] and P.trim_pending is False
    assert [h for h in loop.later if h.delay == 0] == []
    c, tc = server.connect(P)  # two open, both busy: nobody to close
    b.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    c.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.turn()
    with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
        assert loop.timers(0) == 1
    assert P.open_count == 2 and caplog.records == [] and P.trim_pending is False
    assert [h for h in loop.later if h.delay == 0] == []


def test_at_the_ceiling_a_new_connection_is_closed_at_once(server, caplog):
    P = hg.guarded_protocol(max_connections=2, header_timeout_s=0.5, burst=1)
    conns = [server.connect(P) for _ in range(3)]
    assert P.open_count == 3 and all(not t.aborted for _, t in conns)
    with caplog.at_level(logging.WARNING, logger="rakuten.serving.http_guards"):
        refused, transport = server.connect(P)
    assert transport.aborted and refused.transport is None and refused._counted is False
    assert (refused._awaiting, refused._timer, refused._marker, refused._readable) == (False, None, None, False)
    assert P.open_count == 3 and P.closed["refused"] == 1 and refused not in P.waiting
    assert [r.getMessage() for r in caplog.records] == [
        "3 connections open: a new one was closed at once (--max-connections 2 plus 1 accepted in one go)"
    ]
    refused.connection_lost(None)  # nothing was set up: nothing to undo
    assert P.open_count == 3
    assert server.connect(P)[1].aborted and P.closed["refused"] == 2
    conns[0][0].connection_lost(None)
    assert P.open_count == 2 and conns[0][0] not in P.waiting and conns[0][0]._timer is None
    again, transport = server.connect(P)
    assert not transport.aborted and P.open_count == 3


def test_by_default_one_full_accept_batch_above_the_cap(server):
    P = hg.guarded_protocol(max_connections=1, header_timeout_s=0.5)
    conns = [server.connect(P) for _ in range(1 + 2048)]
    assert not any(t.aborted for _, t in conns) and P.open_count == 2049
    assert server.connect(P)[1].aborted


def test_connection_lost_stops_the_clock(server):
    P = hg.guarded_protocol(max_connections=3, header_timeout_s=0.5, burst=2)
    conn, transport = server.connect(P)
    timer = conn._timer
    conn.connection_lost(None)
    assert timer.cancelled and conn._timer is None and P.waiting == {} and P.open_count == 0
    assert transport.closed  # uvicorn's own connection_lost ran


# --------------------------------------------------------------------------- run_server


class FakeServer:
    instances = []
    handler = None
    started = True
    interrupt = False

    def __init__(self, config):
        self.config = config
        self.sockets = "unset"
        FakeServer.instances.append(self)

    async def serve(self, sockets=None):
        self.sockets = sockets
        FakeServer.handler = asyncio.get_running_loop().get_exception_handler()

    def run(self, sockets=None):
        self.started = FakeServer.started
        asyncio.run(self.serve(sockets=["sock"]))
        if FakeServer.interrupt:
            raise KeyboardInterrupt


@pytest.fixture
def fake_uvicorn(monkeypatch):
    import uvicorn

    configs = []

    def config(app, **kwargs):
        configs.append((app, kwargs))
        return "config"

    FakeServer.instances, FakeServer.handler, FakeServer.started, FakeServer.interrupt = [], None, True, False
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    monkeypatch.setattr(uvicorn, "Config", config)
    names = ("rakuten.serving.serve", "rakuten.serving.http_guards", "uvicorn.error", "asyncio")
    before = {n: list(logging.getLogger(n).filters) for n in names}
    yield configs
    for n in names:
        logging.getLogger(n).filters[:] = before[n]


LIMITS = SimpleNamespace(
    max_connections=1000, header_timeout_s=2.5, body_timeout_s=7.0, keep_alive_s=3.0, log_every_s=4.0
)


def test_run_server_configures_uvicorn(fake_uvicorn, monkeypatch, caplog):
    monkeypatch.setattr(hg, "raise_file_limit", lambda: 1456)
    app = object()
    with caplog.at_level(logging.INFO, logger="rakuten.serving.http_guards"):
        hg.run_server(app, "127.0.0.1", 8123, LIMITS)
    [(got_app, kwargs)] = fake_uvicorn
    protocol = kwargs.pop("http")
    assert got_app is app and kwargs == {
        "host": "127.0.0.1",
        "port": 8123,
        "log_level": "warning",
        "access_log": False,
        "server_header": False,
        "loop": "asyncio",
        "backlog": 64,
        "timeout_keep_alive": 3.0,
    }
    assert protocol.__name__ == "GuardedH11Protocol"
    [server] = FakeServer.instances
    assert server.config == "config" and server.sockets == ["sock"] and FakeServer.handler is hg._loop_exception
    filters = {
        n: [f for f in logging.getLogger(n).filters if isinstance(f, hg.RateLimitFilter)]
        for n in ("rakuten.serving.serve", "rakuten.serving.http_guards", "uvicorn.error", "asyncio")
    }
    [throttle] = filters["rakuten.serving.serve"]
    assert all(fs == [throttle] for fs in filters.values()) and throttle.every_s == 4.0
    assert [r.getMessage() for r in caplog.records if r.name == "rakuten.serving.http_guards"] == [
        "open-file limit 1456: at most 944 connections (+64 accepted in one go) instead of --max-connections 1000",
        "limits: 944 connections (+64 accepted in one go; open-file limit 1456), headers within 2.5 s, body stalls "
        "under 7 s, keep-alive 3 s",
    ]


def test_run_server_uses_the_budget_for_the_protocol(server, fake_uvicorn, monkeypatch):
    monkeypatch.setattr(hg, "raise_file_limit", lambda: 1456)
    hg.run_server(object(), "h", 1, LIMITS)
    protocol = fake_uvicorn[0][1]["http"]
    conns = [server.connect(protocol) for _ in range(944 + 64)]
    assert not any(t.aborted for _, t in conns)
    refused, transport = server.connect(protocol)
    assert transport.aborted
    assert server.loop.later[0].delay == 2.5 and server.loop.handler is hg._loop_exception


def test_run_server_without_a_warning_when_the_cap_fits(fake_uvicorn, monkeypatch, caplog):
    monkeypatch.setattr(hg, "raise_file_limit", lambda: 1 << 20)
    with caplog.at_level(logging.INFO, logger="rakuten.serving.http_guards"):
        hg.run_server(object(), "h", 1, LIMITS)
    assert fake_uvicorn[0][1]["backlog"] == 2048
    assert [r.getMessage() for r in caplog.records if r.name == "rakuten.serving.http_guards"] == [
        "limits: 1000 connections (+2048 accepted in one go; open-file limit 1048576), headers within 2.5 s, body "
        "stalls under 7 s, keep-alive 3 s"
    ]


def test_run_server_stops_quietly_on_ctrl_c_and_fails_if_never_started(fake_uvicorn, monkeypatch):
    monkeypatch.setattr(hg, "raise_file_limit", lambda: 1 << 20)
    FakeServer.interrupt = True
    hg.run_server(object(), "h", 1, LIMITS)
    FakeServer.started = False
    with pytest.raises(PipelineError) as err:
        hg.run_server(object(), "0.0.0.0", 99, LIMITS)
    assert str(err.value) == "the service did not start on 0.0.0.0:99 (see the lines above)"
    FakeServer.interrupt = False
    with pytest.raises(PipelineError):
        hg.run_server(object(), "0.0.0.0", 99, LIMITS)

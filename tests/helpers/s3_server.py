"""A real S3-protocol server on 127.0.0.1 for the remote tests, and a way to make it go away mid-transfer.

`S3Server` is moto's server mode (the Flask app DVC's own S3 plugin tests use) on a free local port, in
a thread of the test process: buckets live in memory for the test's duration, like a real bucket that
outlives its connections. `Outage` is a TCP relay in front of it that the client talks to: after a set
number of bytes it shuts down, closing its listening socket and every open connection (what a client
sees when a server is stopped or a link drops), and `restore()` brings the same address back.
"""

from __future__ import annotations

import logging
import socket
import threading
from contextlib import suppress

from werkzeug.serving import BaseWSGIServer, make_server

ACCESS_KEY, SECRET_KEY = "rakuten-test-key", "rakuten-test-secret"  # moto accepts any; never committed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """moto's S3 server on 127.0.0.1:<free port>; `stop()` shuts it down and joins its thread."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request in test logs
        app = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", free_port(), app, threaded=True, request_handler=MotoRequestHandler
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def objects(self, bucket: str) -> dict[str, str]:
        """Every object of ``bucket``: key -> MD5 of its content (the ETag S3 gives a single-part PUT)."""
        found = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            found.update({item["Key"]: item["ETag"].strip('"') for item in page.get("Contents", [])})
        return found

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class Outage:
    """A TCP relay 127.0.0.1:<port> -> ``upstream_port`` that goes away after ``bytes_before_outage``
    bytes from clients: it stops listening and drops every connection, mid-request if need be."""

    def __init__(self, upstream_port: int, bytes_before_outage: int) -> None:
        self.upstream_port, self.budget = upstream_port, bytes_before_outage
        self.port = free_port()
        self.forwarded = 0
        self.tripped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._listen()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by the outage
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        with suppress(OSError):
            while chunk := src.recv(65536):
                if counted and not self.tripped.is_set():
                    with self._lock:
                        self.forwarded += len(chunk)
                        over = self.forwarded > self.budget
                    if over:
                        self._go_away()
                        return
                dst.sendall(chunk)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _go_away(self) -> None:
        self.tripped.set()
        with self._lock:
            doomed, self._sockets = [self._listener, *self._sockets], []
        for sock in doomed:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()

    def restore(self) -> None:
        """The server is back on the same address, with no further outage."""
        self.budget = float("inf")
        self.tripped.clear()
        self._listen()

    def close(self) -> None:
        self._go_away()

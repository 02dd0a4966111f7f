"""`rakuten serve` under a connection flood, started as users start it (tests/serving/test_serve_browser.py's
``running_service``, on the tiny DVC-built project) with a small connection cap.

An attacker process opens idle TCP connections that never finish their request headers, as many as
its open-file limit allows (raised to the hard limit), and reopens those the server closes; meanwhile
two chunked uploads far over the limits (no Content-Length) go to /predict and /predict/batch. A
normal client must keep getting /health and /predict answers within LATENCY_S, the uploads must get
their 413 while the server's memory stays flat, and the server's log must stay a few lines.
The measured figures are logged (``pytest -s --log-cli-level=INFO``)."""

from __future__ import annotations

import json
import logging
import resource
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.serving.test_serve_browser import running_service

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

CAP = 64  # --max-connections of the server under attack
FLOOD_S = 15.0  # how long the attacker opens and holds its connections
FLOOD_RATE = 2000  # new connections a second (one server process on 2 shared cores absorbs ~2500: docs/serve.md)
LATENCY_S = 5.0  # what a normal client may wait for an answer, retries included
MAX_BATCH_MB = 20  # --max-batch-mb: /predict/batch refuses past it, /predict past --max-image-mb (10) + 1
MAX_RSS_GROWTH_MB = 100
MAX_LOG_GROWTH = 64_000  # bytes the log may grow by during the attack (normal /predict lines included)
REPO = Path(__file__).resolve().parents[2]


def flood(port: int, rate: float, seconds: float, out: str) -> None:
    """The attacker (its own process: its file limit and its CPU are its own). Opens ``rate`` connections
    a second, each sending half a request line or nothing, never closing one, up to its file limit
    (raised to the hard limit), and holds them all for ``seconds``; counts those the server closed.
    Writes its counts to ``out`` (JSON)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    budget = hard - 100
    sel = selectors.DefaultSelector()
    counts = {
        "file_limit": hard,
        "budget": budget,
        "rate": rate,
        "attempted": 0,
        "established": 0,
        "closed_by_server": 0,
        "connect_errors": 0,
    }
    held: list[socket.socket] = []
    started = time.monotonic()
    while (now := time.monotonic()) < started + seconds:
        while counts["attempted"] < min(budget, rate * (now - started)):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE, "connecting")
            held.append(s)
            counts["attempted"] += 1
        for key, _ in sel.select(timeout=0.005):
            s = key.fileobj
            if key.data == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    counts["connect_errors"] += 1
                    sel.unregister(s)
                    continue
                counts["established"] += 1
                try:
                    if counts["established"] % 2:
                        s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers started, never finished
                except OSError:
                    pass
                sel.modify(s, selectors.EVENT_READ, "idle")
            else:  # readable: the server closed it (made room, or past the header timeout); it stays open here
                counts["closed_by_server"] += 1
                sel.unregister(s)
    counts["held_open_at_end"] = len(held)
    Path(out).write_text(json.dumps(counts))


def chunked_upload(port: int, path: str, field: str, total: int) -> dict:
    """POST a multipart body of ``total`` bytes, chunked (no Content-Length), reading the answer while
    sending, as a client that does not trust the server to wait; retried when the connection was closed
    before any answer (made room for while its headers were still on the way)."""
    for attempt in range(5):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        part = f'--xx\r\nContent-Disposition: form-data; name="{field}"; filename="big.jpg"\r\n\r\n'.encode()
        frame = b"%x\r\n" % 65536 + b"\xff" * 65536 + b"\r\n"
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(head + b"%x\r\n" % len(part) + part + b"\r\n")
        s.setblocking(False)
        sent, answer, pending, started = 0, b"", memoryview(b""), time.monotonic()
        while time.monotonic() - started < 60:
            readable, writable, _ = select.select([s], [s] if sent < total or pending else [], [], 10)
            if readable:
                try:
                    data = s.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer and answer.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
                    break
            elif writable:
                if not pending:
                    pending, sent = memoryview(frame), sent + 65536
                try:
                    pending = pending[s.send(pending) :]
                except OSError:  # the server closed the connection: read what it said before
                    s.setblocking(True)
                    s.settimeout(2)
                    try:
                        while data := s.recv(65536):
                            answer += data
                    except OSError:
                        pass
                    break
            else:
                break
        s.close()
        if answer:
            status = int(answer.split(b" ", 2)[1])
            return {
                "path": path,
                "status": status,
                "sent_mb": sent / 1e6,
                "seconds": time.monotonic() - started,
                "attempts": attempt + 1,
                "body": answer.split(b"\r\n\r\n", 1)[-1][:300].decode(errors="replace"),
            }
    return {"path": path, "status": None, "sent_mb": sent / 1e6, "attempts": 5}


class Prober(threading.Thread):
    """The normal client: /health every 0.25 s and /predict every 2 s, each on a new connection, retried
    on a closed connection; records how long each took to get its answer (retries included)."""

    def __init__(self, url: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.stop = url, stop
        self.health: list[float] = []
        self.predict: list[float] = []
        self.failures: list[str] = []
        self.retries = 0

    def ask(self, method: str, path: str, **kwargs) -> float:
        started = time.monotonic()
        while True:
            try:
                response = httpx.request(method, self.url + path, timeout=LATENCY_S * 2, **kwargs)
                if response.status_code != 200:
                    self.failures.append(f"{path}: {response.status_code} {response.text[:200]}")
                return time.monotonic() - started
            except httpx.TransportError as exc:
                self.retries += 1
                if time.monotonic() - started > LATENCY_S * 2:
                    self.failures.append(f"{path}: {type(exc).__name__} {exc}")
                    return time.monotonic() - started
                time.sleep(0.05)

    def run(self) -> None:
        last_predict = 0.0
        while not self.stop.is_set():
            self.health.append(self.ask("GET", "/health"))
            if time.monotonic() - last_predict > 2:
                last_predict = time.monotonic()
                self.predict.append(self.ask("POST", "/predict", json={"designation": "Piscine tubulaire ronde"}))
            self.stop.wait(0.25)


class ServerSampler(threading.Thread):
    """The server's peak resident memory and open descriptors, every 0.1 s."""

    def __init__(self, pid: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.process, self.stop, self.peak, self.peak_fds = psutil.Process(pid), stop, 0, 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.peak_fds = max(self.peak_fds, self.process.num_fds())
            self.stop.wait(0.1)


def test_service_survives_a_connection_flood_and_oversized_uploads(tiny_built_repo, tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log_path = tmp_path / "serve.log"
    options = ("--max-connections", str(CAP), "--header-timeout-s", "3", "--max-batch-mb", str(MAX_BATCH_MB))
    with running_service(tiny_built_repo, log_path, *options) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        httpx.post(url + "/predict", json={"designation": "warm-up"}, timeout=60)  # first-request allocations
        server = psutil.Process(proc.pid)
        rss_start, fds_start, log_start = server.memory_info().rss, server.num_fds(), log_path.stat().st_size
        stop = threading.Event()
        prober, sampler = Prober(url, stop), ServerSampler(proc.pid, stop)
        counts_path = tmp_path / "flood.json"
        attacker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tests.serving.test_serve_load import flood; "
                "flood(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])",
                str(port),
                str(FLOOD_RATE),
                str(FLOOD_S),
                str(counts_path),
            ],
            cwd=REPO,
        )
        try:
            prober.start()
            sampler.start()
            time.sleep(3)  # the flood is under way
            uploads = [
                chunked_upload(port, "/predict", "image", 300_000_000),
                chunked_upload(port, "/predict/batch", "csv", 200_000_000),
            ]
            attacker.wait(timeout=FLOOD_S + 30)
            stop.set()
            prober.join(30)
            sampler.join(5)
        finally:
            stop.set()
            if attacker.poll() is None:
                attacker.kill()
                attacker.wait()
        counts = json.loads(counts_path.read_text())
        after = httpx.get(url + "/health", timeout=LATENCY_S)
        rss_growth_mb = (sampler.peak - rss_start) / 2**20
        log_text = log_path.read_text(errors="replace")[log_start:]
        guard_lines = [
            line
            for line in log_text.splitlines()
            if any(
                f" {name}" in line
                for name in ("rakuten.serving.serve:", "rakuten.serving.http_guards:", "uvicorn.error:", "asyncio:")
            )
        ]
        health = sorted(prober.health)
        figures = {
            "file_limit": hard,
            "flood": counts,
            "health_answers": len(health),
            "health_p50_s": round(health[len(health) // 2], 3),
            "health_max_s": round(health[-1], 3),
            "predict_answers": len(prober.predict),
            "predict_max_s": round(max(prober.predict), 3),
            "client_retries": prober.retries,
            "uploads": uploads,
            "rss_start_mb": round(rss_start / 2**20),
            "rss_growth_mb": round(rss_growth_mb, 1),
            "server_fds_start": fds_start,
            "server_fds_peak": sampler.peak_fds,
            "log_growth_bytes": len(log_text.encode()),
            "guard_log_lines": len(guard_lines),
        }
        log.info("flood figures: %s", json.dumps(figures))
        log.info("server's own lines during the flood:\n%s", "\n".join(guard_lines))

    assert counts["established"] >= min(10_000, counts["budget"]), counts
    if counts["budget"] < 10_000:
        log.warning("the file limit (%d) allows only %d connections, fewer than 10,000", hard, counts["budget"])
    assert prober.failures == [] and after.status_code == 200, prober.failures
    assert len(health) >= FLOOD_S and health[-1] < LATENCY_S and max(prober.predict) < LATENCY_S, figures
    for upload, limit_mb in zip(uploads, (11, MAX_BATCH_MB)):
        assert upload["status"] == 413 and f"{limit_mb:g} MB limit" in upload["body"], upload
        assert upload["sent_mb"] < 100, upload  # refused while streaming: the limit plus socket buffers
    assert rss_growth_mb < MAX_RSS_GROWTH_MB, figures
    # the cap plus 4 accept batches at worst (http_guards.connection_budget); without the cap: the attacker's 19,900
    assert sampler.peak_fds <= fds_start + CAP + 4 * 2048, figures
    assert len(log_text.encode()) < MAX_LOG_GROWTH and len(guard_lines) < 40, figures
    assert "Traceback" not in log_text and "Too many open files" not in log_text

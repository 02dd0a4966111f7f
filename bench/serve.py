"""Load and soak test of ``rakuten serve``: latency, throughput and server memory under concurrent clients.

Starts the service (``python -m rakuten.serving.cli serve``) as a subprocess on 127.0.0.1 and a free port, in
the ``--data`` root (so its params.yaml supplies the runtime knobs, as for a user there), waits for
``GET /health``, sends one request of each kind (warm-up; the explain kind is probed there and skipped,
with the reason recorded, when the service answers it 500 or 422), then drives it with ``--clients``
threads (one ``httpx.Client`` each) for ``--seconds``. Each client cycles through a fixed mix of
request kinds (``--mix``):

- ``text``: ``POST /predict`` JSON, designation + description of a test row, no image;
- ``image``: ``POST /predict`` multipart, the same fields and the row's image;
- ``explain``: ``POST /predict`` JSON with ``"explain": true``;
- ``batch``: ``POST /predict/batch``, ``--batch-rows`` consecutive rows of X_test_update.csv (X_test
  layout) and their images; the streamed CSV must hold exactly those rows.

Every non-2xx answer, exception or malformed answer counts as an error. Per kind and overall: count,
errors, p50/p95/p99/max latency (ms, full response read, queueing behind the model's lock included),
requests/s (and rows/s for batch). A sampler thread reads the server's RSS (main process + its
children, psutil) every ``--sample-s``: at start (after the warm-up), peak, end (after the load, once
settled), growth = end - start, checked against ``--max-rss-growth-mb``; the open file descriptors and
threads at start and end too (leaks of temporary files or threads show there). The server is always
stopped (terminate, then kill; its children too) and the report says whether anything was left.

Writes ``reports/bench/serve.json`` (``--output``); ``--section soak`` writes the report under that key
of an existing ``--output`` instead, keeping the rest (run the default first, then the soak). Exits 1
when a check failed (an error, a kind that never ran, RSS growth over the bound, a traceback in the
server log during the load, a process left behind). Timings on a shared machine are noisy: the
report records the load average before and after.

``--batching`` compares dynamic batching off (``--max-batch-size 1``) and on instead: two servers, both
started first; per request kind (text, text + photo) and client count (``--compare-clients``, 1, 4 and 8),
batching off then on, back to back, ``--compare-seconds`` each: requests/s, latencies, the mean batch
size (``GET /health``'s counts), the server's and the whole machine's CPU; and the issue's target at the
most clients (5x the 6.03 req/s of the service before batching, p99 under 1 s). Written under the key
``batching`` of ``--output``, keeping its other keys.

    python bench/serve.py                                   # 60 s, 4 clients, models/ of this checkout
    python bench/serve.py --seconds 180 --section soak      # the soak, merged into serve.json
    python bench/serve.py --batching                        # batching off / on, merged into serve.json
    python bench/serve.py --models /tmp/repo/models --data /tmp/repo --seconds 3 --clients 2 --output /tmp/s.json
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.data.ingest import IMAGE_DIRS, X_COLUMNS, X_TEST, catalog_rows, read_official_csv

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench.serve")
KINDS = ("text", "image", "explain", "batch")
MB = 2**20


# -------------------------------------------------------------------------------------------- data


@dataclass
class Products:
    """The test rows the clients send (X_test layout; empty text as ""), each row's image file name and
    the bytes of the images present, in memory. Read as the service reads them: the official CSV
    reader, and :func:`rakuten.data.ingest.catalog_rows` for where a row's image is and whether it is
    readable."""

    x: pd.DataFrame
    names: list[str]  # per row: image_<imageid>_product_<productid>.jpg
    images: dict[str, bytes]  # file name -> bytes, for the rows whose image is readable

    @classmethod
    def load(cls, data_root: Path) -> "Products":
        sample = data_root / "data" / "sample"
        path = sample / X_TEST
        x = read_official_csv(path, X_COLUMNS)
        rows, _ = catalog_rows(x, path, sample / IMAGE_DIRS[True])
        names = [Path(p).name for p in rows["image_path"]]
        images = {name: Path(p).read_bytes() for name, p, ok in zip(names, rows["image_path"], rows["image_ok"]) if ok}
        if len(x) == 0 or not images:
            raise SystemExit(f"{sample}: no test rows or no test images to send")
        return cls(x.fillna(""), names, images)

    def row(self, i: int) -> pd.Series:
        return self.x.iloc[i % len(self.x)]

    def image_row(self, i: int) -> tuple[pd.Series, str, bytes]:
        """The first row from ``i`` on that has an image, with its file name and bytes."""
        for j in range(i, i + len(self.x)):
            name = self.names[j % len(self.x)]
            if name in self.images:
                return self.row(j), name, self.images[name]
        raise AssertionError("no row with an image")

    def batch(self, i: int, n: int) -> tuple[bytes, list[tuple[str, bytes]], list[str]]:
        """CSV bytes (X_test layout) of ``n`` rows from ``i`` on, their images, their index labels."""
        start = (i * n) % len(self.x)
        positions = [(start + k) % len(self.x) for k in range(n)]
        rows = self.x.iloc[positions]
        buffer = io.StringIO()
        rows.to_csv(buffer, index=True, lineterminator="\n")
        names = [self.names[p] for p in positions]
        images = [(name, self.images[name]) for name in names if name in self.images]
        return buffer.getvalue().encode(), images, [str(v) for v in rows.index]


# ------------------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``rakuten serve`` in a subprocess; :meth:`stop` always leaves nothing behind."""

    def __init__(self, models: Path, data_root: Path, lock: Path, log_path: Path, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        argv = [
            sys.executable,
            "-m",
            "rakuten.serving.cli",
            "serve",
            "--models",
            str(models),
            "--lock",
            str(lock),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *extra,
        ]
        self.proc = subprocess.Popen(
            argv, cwd=data_root, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.ps = psutil.Process(self.proc.pid)
        self.seen: dict[int, psutil.Process] = {}  # every child seen, to stop any left behind
        self.kinds_seen: set[str] = set()  # their command lines
        self.seen_now: list[psutil.Process] = []

    def wait_ready(self, timeout_s: float) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"the server exited ({self.proc.returncode}) before answering /health:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"the server did not answer /health within {timeout_s:g} s:\n{self.log_tail()}")

    def processes(self) -> list[psutil.Process]:
        procs = [self.ps]
        try:
            kids = self.ps.children(recursive=True)
        except psutil.Error:
            kids = []
        for kid in kids:
            if kid.pid not in self.seen:
                self.seen[kid.pid] = kid
                try:
                    self.kinds_seen.add(" ".join(kid.cmdline())[:120])
                except psutil.Error:
                    pass
        return procs + kids

    def rss(self) -> tuple[float, float]:
        """(main, main + children) RSS in MB (children's shared pages count twice: an upper bound)."""
        main = total = 0.0
        procs = self.processes()
        self.seen_now = procs[1:]
        for i, proc in enumerate(procs):
            try:
                value = proc.memory_info().rss / MB
            except psutil.Error:
                continue
            total += value
            if i == 0:
                main = value
        return main, total

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def handles(self) -> dict[str, int]:
        return {
            "fds": self.ps.num_fds(),
            "threads": self.ps.num_threads(),
            "children": len(self.ps.children(recursive=True)),
        }

    def log_text(self, offset: int = 0) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> list[int]:
        """Terminate the server (then kill it past 15 s) and any child of it still alive; the ids
        of the processes that had to be killed, or that still live (should be empty)."""
        self.processes()
        killed = []
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                killed.append(self.proc.pid)
                self.proc.kill()
                self.proc.wait(10)
        for pid, kid in self.seen.items():
            try:
                if kid.is_running() and kid.status() != psutil.STATUS_ZOMBIE:
                    kid.terminate()
                    try:
                        kid.wait(5)
                    except psutil.TimeoutExpired:
                        kid.kill()
                    killed.append(pid)
            except psutil.NoSuchProcess:
                pass
        self._log.close()
        alive = [
            p
            for p in [self.proc.pid, *self.seen]
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        return sorted(set(killed) | set(alive))


class Sampler(threading.Thread):
    """The server's RSS every ``period`` seconds, from :meth:`start` to :meth:`finish`."""

    def __init__(self, server: Server, period: float):
        super().__init__(daemon=True, name="rss-sampler")
        self.server, self.period = server, period
        self.samples: list[tuple[float, float, float]] = []  # (t, main MB, total MB)
        self.most_children = 0
        self._done = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._done.is_set():
            main, total = self.server.rss()
            self.most_children = max(self.most_children, len(self.server.seen_now))
            self.samples.append((time.perf_counter() - self.t0, main, total))
            self._done.wait(self.period)

    def finish(self) -> None:
        self._done.set()
        self.join()


# ------------------------------------------------------------------------------------------ client


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    rows: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    inputs_used: dict[str, dict[str, int]] = field(default_factory=lambda: {k: {} for k in KINDS})
    samples: list[str] = field(default_factory=list)  # first error messages
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str, seconds: float, rows: int, used: list[str]) -> None:
        with self.lock:
            self.latencies[kind].append(seconds * 1000)
            self.rows[kind] += rows
            for u in used:
                self.inputs_used[kind][u] = self.inputs_used[kind].get(u, 0) + 1

    def error(self, kind: str, seconds: float, message: str) -> None:
        with self.lock:
            self.latencies[kind].append(seconds * 1000)
            self.errors[kind] += 1
            if len(self.samples) < 10:
                self.samples.append(f"{kind}: {' '.join(message.split())[:300]}")


class BadAnswer(Exception):
    pass


def send(client: httpx.Client, kind: str, products: Products, i: int, batch_rows: int) -> tuple[int, list[str]]:
    """One request of ``kind`` (the ``i``-th of its client); (rows predicted, inputs_used values).
    Raises :class:`BadAnswer` on a non-2xx or malformed answer."""
    if kind == "batch":
        csv_bytes, images, index = products.batch(i, batch_rows)
        files = [("csv", ("x_test.csv", csv_bytes, "text/csv"))]
        files += [("images", (name, data, "image/jpeg")) for name, data in images]
        r = client.post("/predict/batch", files=files)
        check_status(r)
        table = pd.read_csv(io.StringIO(r.text), index_col=0, dtype=str, keep_default_na=False)
        if [str(v) for v in table.index] != index or "prdtypecode" not in table:
            raise BadAnswer(f"batch: answer has rows {list(table.index)[:5]}..., expected {index[:5]}...")
        return len(table), list(table["inputs_used"])
    if kind == "image":
        row, name, data = products.image_row(i)
        r = client.post(
            "/predict",
            data={"designation": row.designation, "description": row.description},
            files={"image": (name, data, "image/jpeg")},
        )
    else:
        row = products.row(i)
        body = {"designation": row.designation, "description": row.description}
        if kind == "explain":
            body["explain"] = True
        r = client.post("/predict", json=body)
    check_status(r)
    answer = r.json()
    if not isinstance(answer.get("prdtypecode"), int) or len(answer.get("top", [])) != 3:
        raise BadAnswer(f"{kind}: malformed answer {r.text[:200]}")
    if kind == "explain" and "explanations" not in answer:
        raise BadAnswer(f"explain: no explanations in {r.text[:200]}")
    return 1, [answer.get("inputs_used", "?")]


def check_status(r: httpx.Response) -> None:
    if not 200 <= r.status_code < 300:
        raise BadAnswer(f"HTTP {r.status_code}: {r.text[:300]}")


def schedule(mix: dict[str, int]) -> list[str]:
    """One cycle of request kinds: one of each first, then the rest of the weights interleaved."""
    left = dict(mix)
    out = []
    while any(left.values()):
        for kind in KINDS:
            if left.get(kind, 0) > 0:
                out.append(kind)
                left[kind] -= 1
    return out


def client_loop(
    url: str,
    products: Products,
    cycle: list[str],
    offset: int,
    deadline: float,
    batch_rows: int,
    timeout_s: float,
    tally: Tally,
    seed: int,
) -> None:
    counter = itertools.count(seed * 7919)
    with httpx.Client(base_url=url, timeout=timeout_s) as client:
        for kind in itertools.islice(itertools.cycle(cycle), offset, None):
            if time.perf_counter() >= deadline:
                return
            start = time.perf_counter()
            try:
                rows, used = send(client, kind, products, next(counter), batch_rows)
            except Exception as exc:  # noqa: BLE001 - any failure is a counted error, never a dead client
                tally.error(kind, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
            else:
                tally.ok(kind, time.perf_counter() - start, rows, used)


# ------------------------------------------------------------------------------------------ report


def latency_stats(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "mean_ms": round(float(np.mean(ms)), 1),
        "max_ms": round(float(np.max(ms)), 1),
    }


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for part in filter(None, text.split(",")):
        kind, _, weight = part.partition("=")
        if kind not in KINDS or not weight.isdigit():
            raise SystemExit(f"--mix {text!r}: expected kind=weight,... with kinds {', '.join(KINDS)}")
        mix[kind] = int(weight)
    return {k: w for k, w in mix.items() if w > 0}


def warm_up(url: str, products: Products, mix: dict[str, int], batch_rows: int, timeout_s: float) -> dict:
    """One request of each kind, in order; the explain kind is probed and dropped (with the reason)
    when the service answers it 500 or 422 (the explanations may not be ready)."""
    out = {"explain": {"requested": "explain" in mix}}
    with httpx.Client(base_url=url, timeout=timeout_s) as client:
        for kind in KINDS:
            if kind not in mix:
                continue
            start = time.perf_counter()
            try:
                send(client, kind, products, 0, batch_rows)
            except BadAnswer as exc:
                if kind == "explain" and str(exc).startswith(("HTTP 500", "HTTP 422")):
                    out["explain"].update(available=False, skipped=str(exc))
                    log.warning("explain=true answered %s: the explain kind is skipped", str(exc)[:200])
                    continue
                raise SystemExit(f"warm-up {kind} request failed: {exc}") from None
            out[f"{kind}_ms"] = round((time.perf_counter() - start) * 1000, 1)
            if kind == "explain":
                out["explain"]["available"] = True
    return out


@dataclass
class Load:
    """What one load run measured on the server, from the warm-up's end to the settled end."""

    tally: Tally
    samples: list[tuple[float, float, float]]  # (t, main MB, total MB)
    most_children: int
    duration: float
    cpu_s: float
    main_end: float
    total_end: float
    handles_start: dict[str, int]
    handles_end: dict[str, int]
    tracebacks: int


def run(args: argparse.Namespace) -> dict:
    mix = parse_mix(args.mix)
    products = Products.load(args.data)
    lock = args.lock or args.data / "dvc.lock"
    report = header(args, mix, lock)
    checks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rakuten-bench-serve-") as tmp:
        server = Server(
            args.models.resolve(),
            args.data.resolve(),
            lock.resolve(),
            Path(tmp) / "server.log",
            args.serve_args.split(),
        )
        leftover: list[int] = []
        try:
            load = drive(server, products, mix, args, report)
        finally:
            leftover = server.stop()
        report["server_stopped"] = {"exit_code": server.proc.returncode, "killed_or_left": leftover}
        if leftover:
            checks.append(f"server processes had to be killed or are left: {leftover}")
    report["rss_mb"] = rss_report(load, server, args)
    report["server_handles"] = {"start": load.handles_start, "end": load.handles_end}
    report["server_log_tracebacks_during_load"] = load.tracebacks
    report["server_cpu_s_during_load"] = round(load.cpu_s, 1)
    report["load_s"] = round(load.duration, 2)
    report["kinds"], report["overall"] = kinds_report(load, mix, checks)
    report["error_samples"] = load.tally.samples
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    errors = report["overall"]["errors"]
    if errors:
        checks.append(f"{errors} request(s) failed: {load.tally.samples[:3]}")
    if not report["rss_mb"]["passed"]:
        checks.append(
            f"server RSS grew {report['rss_mb']['growth']:.1f} MB, over the {args.max_rss_growth_mb:g} MB bound"
        )
    if load.tracebacks:
        checks.append(f"{load.tracebacks} traceback(s) in the server log during the load")
    report["failed_checks"] = checks
    report["passed"] = not checks
    return report


def header(args: argparse.Namespace, mix: dict[str, int], lock: Path) -> dict:
    """The report's settings, machine and note, before anything runs."""
    return {
        "what": "rakuten serve under concurrent clients: latency per request kind, throughput, server RSS",
        "settings": {
            "seconds": args.seconds,
            "clients": args.clients,
            "mix": mix,
            "batch_rows": args.batch_rows,
            "max_rss_growth_mb": args.max_rss_growth_mb,
            "sample_s": args.sample_s,
            "models": str(args.models),
            "data": str(args.data),
            "lock": str(lock),
            "serve_args": args.serve_args,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": metadata.version("torch"),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
        },
        "note": "latencies include waiting for the model's lock (one prediction at a time); on a shared "
        "machine the figures are noisy (see the load averages)",
    }


def drive(server: Server, products: Products, mix: dict[str, int], args: argparse.Namespace, report: dict) -> Load:
    """Wait for the server, warm it up (``report``'s ``startup_s`` and ``warm_up``; the explain kind
    leaves ``mix`` when the service cannot answer it), then ``--clients`` clients for ``--seconds``."""
    report["startup_s"] = round(server.wait_ready(args.startup_timeout), 1)
    log.info("server up on %s in %.1f s (pid %d)", server.url, report["startup_s"], server.proc.pid)
    report["warm_up"] = warm_up(server.url, products, mix, args.batch_rows, args.timeout)
    if report["warm_up"]["explain"].get("available") is False:
        mix.pop("explain", None)
    time.sleep(1.0)  # let transient workers of the warm-up exit before the start figure
    log_offset = server.log_size()
    handles_start = server.handles()
    sampler = Sampler(server, args.sample_s)
    sampler.start()
    cpu_start = server.cpu_s()
    cycle = schedule(mix)
    log.info("load: %d clients for %g s, cycle %s", args.clients, args.seconds, " ".join(cycle))
    tally, duration = run_clients(server.url, products, cycle, args.clients, args.seconds, args)
    cpu_load = server.cpu_s() - cpu_start
    time.sleep(args.settle_s)  # transient workers exit; the end figure is the idle server's
    sampler.finish()
    main_end, total_end = server.rss()
    return Load(
        tally=tally,
        samples=sampler.samples,
        most_children=sampler.most_children,
        duration=duration,
        cpu_s=cpu_load,
        main_end=main_end,
        total_end=total_end,
        handles_start=handles_start,
        handles_end=server.handles(),
        tracebacks=server.log_text(log_offset).count("Traceback"),
    )


def run_clients(
    url: str, products: Products, cycle: list[str], clients: int, seconds: float, args: argparse.Namespace
) -> tuple[Tally, float]:
    """``clients`` threads, each cycling through ``cycle`` from its own offset, for ``seconds``: what
    they measured and how long it took (the requests under way at the deadline finish)."""
    tally = Tally()
    t0 = time.perf_counter()
    threads = [
        threading.Thread(
            target=client_loop,
            name=f"client-{c}",
            args=(
                url,
                products,
                cycle,
                c * len(cycle) // max(clients, 1),
                t0 + seconds,
                args.batch_rows,
                args.timeout,
                tally,
                c,
            ),
        )
        for c in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.perf_counter() - t0


def rss_report(load: Load, server: Server, args: argparse.Namespace) -> dict:
    """The server's RSS over the load: start, peak, end, growth against the bound, the main process's
    trend over the second half, the children seen."""
    samples = load.samples
    start_main, start_total = samples[0][1], samples[0][2]
    growth = load.total_end - start_total
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    slope = (
        float(np.polyfit([s[0] for s in half], [s[1] for s in half], 1)[0]) * 60
        if len(half) >= 3 and half[-1][0] > half[0][0]
        else None
    )
    step = max(1, round(5.0 / args.sample_s))
    return {
        "start": round(start_total, 1),
        "peak": round(max(s[2] for s in samples + [(0, load.main_end, load.total_end)]), 1),
        "end": round(load.total_end, 1),
        "growth": round(growth, 1),
        "bound": args.max_rss_growth_mb,
        "passed": growth <= args.max_rss_growth_mb,
        "main_process": {
            "start": round(start_main, 1),
            "peak": round(max(s[1] for s in samples), 1),
            "end": round(load.main_end, 1),
            "trend_second_half_mb_per_min": None if slope is None else round(slope, 2),
        },
        "children": {
            "most_at_once": load.most_children,
            "distinct": len(server.seen),
            "command_lines": sorted(server.kinds_seen),
        },
        "what": "server RSS, main process + children (shared pages counted per process); start after the "
        "warm-up, end once the load stopped and settled",
        "timeline_s_mb": [[round(s[0], 1), round(s[2], 1)] for s in samples[::step]],
    }


def kinds_report(load: Load, mix: dict[str, int], checks: list[str]) -> tuple[dict, dict]:
    """Per request kind and overall: count, errors, latency percentiles, rates; a kind that never ran
    is a failed check."""
    tally, duration = load.tally, load.duration
    kinds = {}
    for kind in KINDS:
        if kind not in mix:
            continue
        lat = tally.latencies[kind]
        entry = {
            "count": len(lat),
            "errors": tally.errors[kind],
            **latency_stats(lat),
            "req_per_s": round(len(lat) / duration, 2),
            "inputs_used": tally.inputs_used[kind],
        }
        if kind == "batch":
            entry.update(rows=tally.rows[kind], rows_per_s=round(tally.rows[kind] / duration, 1))
        kinds[kind] = entry
        if not lat:
            checks.append(f"{kind}: no request ran (raise --seconds)")
    everything = [x for k in kinds for x in tally.latencies[k]]
    overall = {
        "count": len(everything),
        "errors": sum(tally.errors[k] for k in kinds),
        **latency_stats(everything),
        "req_per_s": round(len(everything) / duration, 2),
        "rows_per_s": round(sum(tally.rows[k] for k in kinds) / duration, 1),
    }
    return kinds, overall


def summarise(report: dict) -> None:
    s = report["settings"]
    log.info(
        "%g s, %d clients, startup %.1f s; explain: %s",
        s["seconds"],
        s["clients"],
        report["startup_s"],
        "ran"
        if report["warm_up"]["explain"].get("available")
        else f"skipped ({report['warm_up']['explain'].get('skipped', 'not requested')[:120]})",
    )
    log.info(
        "%-8s %6s %6s %9s %9s %9s %9s %8s", "kind", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s"
    )
    for kind, k in [*report["kinds"].items(), ("overall", report["overall"])]:
        log.info(
            "%-8s %6d %6d %9.1f %9.1f %9.1f %9.1f %8.2f%s",
            kind,
            k["count"],
            k["errors"],
            k.get("p50_ms", 0),
            k.get("p95_ms", 0),
            k.get("p99_ms", 0),
            k.get("max_ms", 0),
            k["req_per_s"],
            f"  ({k['rows_per_s']:.1f} rows/s)" if kind == "batch" else "",
        )
    r = report["rss_mb"]
    log.info(
        "server RSS (MB, + children): start %.1f, peak %.1f, end %.1f: growth %+.1f, bound %g: %s; "
        "main process trend over the second half %s MB/min",
        r["start"],
        r["peak"],
        r["end"],
        r["growth"],
        r["bound"],
        "passed" if r["passed"] else "FAILED",
        r["main_process"]["trend_second_half_mb_per_min"],
    )
    c = r["children"]
    log.info(
        "server children: at most %d at once, %d in all (%s)",
        c["most_at_once"],
        c["distinct"],
        "; ".join(c["command_lines"])[:300] or "none",
    )
    h = report["server_handles"]
    log.info(
        "server fds %d -> %d, threads %d -> %d; CPU %.1f s over %.1f s of load; load average %s -> %s",
        h["start"]["fds"],
        h["end"]["fds"],
        h["start"]["threads"],
        h["end"]["threads"],
        report["server_cpu_s_during_load"],
        report["load_s"],
        report["machine"]["load_average_before"],
        report["machine"]["load_average_after"],
    )


# ----------------------------------------------------------------------------- batching off / on

#: the two modes compared by ``--batching``: extra ``rakuten serve`` options of each
BATCHING_MODES = {"off": ["--max-batch-size", "1"], "on": []}
#: the issue's figure to beat: requests/s of the service before batching (4 clients, the default mix)
BASELINE_REQ_PER_S = 6.03


def batching_counts(url: str) -> dict:
    """The batcher's counts from ``GET /health`` (none when batching is off)."""
    return httpx.get(f"{url}/health", timeout=30).json().get("batching") or {}


def one_run(server: Server, products: Products, kind: str, clients: int, args: argparse.Namespace) -> dict:
    """``clients`` clients of one request kind for ``--compare-seconds``: requests/s, latencies, mean batch
    size, the server's CPU and the whole machine's (other processes on a shared machine show there)."""
    before, cpu_before, machine_before = batching_counts(server.url), server.cpu_s(), psutil.cpu_times()
    load = os.getloadavg()[0]
    tally, duration = run_clients(server.url, products, [kind], clients, args.compare_seconds, args)
    after, cpu, machine_after = batching_counts(server.url), server.cpu_s() - cpu_before, psutil.cpu_times()
    busy = (sum(machine_after) - machine_after.idle - machine_after.iowait) - (
        sum(machine_before) - machine_before.idle - machine_before.iowait
    )
    batches = after.get("batches", 0) - before.get("batches", 0)
    lat = tally.latencies[kind]
    return {
        "kind": kind,
        "clients": clients,
        "count": len(lat),
        "errors": tally.errors[kind],
        "req_per_s": round(len(lat) / duration, 2),
        **latency_stats(lat),
        "mean_batch_size": round((after["rows"] - before["rows"]) / batches, 2) if batches else 1.0,
        "server_cpu_cores": round(cpu / duration, 2),
        "machine_busy_cores": round(busy / duration, 2),
        "load_average_at_start": round(load, 2),
        "inputs_used": tally.inputs_used[kind],
    }


def compare_batching(args: argparse.Namespace) -> dict:
    """Both modes, each on a server of its own (same models, params and data), both started first; then
    per request kind and client count, batching off then on, back to back, so that the load of a shared
    machine weighs on both alike. Checks: no error, no traceback, no server left."""
    products = Products.load(args.data)
    lock = args.lock or args.data / "dvc.lock"
    report = {
        "what": "POST /predict with dynamic batching off (--max-batch-size 1: one request at a time) and on "
        "(the serve section's max_batch_size / max_batch_delay_ms), per request kind and client count; "
        "the two modes run back to back for each line",
        "settings": {
            "seconds_per_run": args.compare_seconds,
            "clients": args.compare_clients,
            "modes": {m: " ".join([*args.serve_args.split(), *extra]) for m, extra in BATCHING_MODES.items()},
            "models": str(args.models),
            "data": str(args.data),
        },
        "machine": header(args, {}, lock)["machine"],
        "modes": {m: {"runs": []} for m in BATCHING_MODES},
    }
    checks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rakuten-bench-serve-") as tmp:
        servers: dict[str, Server] = {}
        try:
            for mode, extra in BATCHING_MODES.items():
                servers[mode] = Server(
                    args.models.resolve(), args.data.resolve(), lock.resolve(), Path(tmp) / f"{mode}.log",
                    [*args.serve_args.split(), *extra],
                )  # fmt: skip
            for mode, server in servers.items():
                report["modes"][mode]["startup_s"] = round(server.wait_ready(args.startup_timeout), 1)
                warm_up(server.url, products, {"text": 1, "image": 1}, args.batch_rows, args.timeout)
                report["modes"][mode]["batching"] = httpx.get(f"{server.url}/health", timeout=30).json()["batching"]
            for kind in ("text", "image"):
                for clients in args.compare_clients:
                    for mode, server in servers.items():
                        run = one_run(server, products, kind, clients, args)
                        report["modes"][mode]["runs"].append(run)
                        log.info("%s, %s x %d: %.1f req/s, p99 %.0f ms", mode, kind, clients, run["req_per_s"],
                                 run.get("p99_ms", 0))  # fmt: skip
                        if run["errors"]:
                            checks.append(f"{mode}: {run['errors']} error(s) in {kind} x {clients}")
        finally:
            for mode, server in servers.items():
                tracebacks = server.log_text().count("Traceback")
                leftover = server.stop()
                report["modes"][mode]["server_stopped"] = {
                    "exit_code": server.proc.returncode,
                    "killed_or_left": leftover,
                    "log_tail": server.log_path.read_text(errors="replace").splitlines()[-2:],
                }
                checks += [f"{mode}: {tracebacks} traceback(s) in the server log"] if tracebacks else []
                checks += [f"{mode}: server processes had to be killed or are left: {leftover}"] if leftover else []
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["target"] = batching_target(report, max(args.compare_clients))
    report["failed_checks"], report["passed"] = checks, not checks
    return report


def batching_target(report: dict, clients: int) -> dict:
    """The issue's target at ``clients`` clients, per kind: requests/s at least 5x the service before
    batching (the issue's 6.03 req/s, and batching off in this run) with p99 under 1 s."""
    out = {"clients": clients, "baseline_req_per_s": BASELINE_REQ_PER_S}
    for kind in ("text", "image"):
        on, off = (
            next(r for r in report["modes"][m]["runs"] if r["kind"] == kind and r["clients"] == clients)
            for m in ("on", "off")
        )
        out[kind] = {
            "req_per_s": on["req_per_s"],
            "x_baseline": round(on["req_per_s"] / BASELINE_REQ_PER_S, 2),
            "x_batching_off": round(on["req_per_s"] / off["req_per_s"], 2) if off["req_per_s"] else None,
            "p99_ms": on.get("p99_ms"),
            "met": on["req_per_s"] >= 5 * BASELINE_REQ_PER_S and on.get("p99_ms", 1e9) < 1000,
        }
    return out


def summarise_batching(report: dict) -> None:
    log.info(
        "%-4s %-6s %7s %8s %8s %8s %8s %10s %9s %9s %6s",
        "mode", "kind", "clients", "req/s", "p50 ms", "p99 ms", "max ms", "mean batch", "CPU cores", "all cores",
        "errors",
    )  # fmt: skip
    for mode, entry in report["modes"].items():
        for r in entry["runs"]:
            log.info(
                "%-4s %-6s %7d %8.1f %8.0f %8.0f %8.0f %10.2f %9.2f %9.2f %6d",
                mode, r["kind"], r["clients"], r["req_per_s"], r.get("p50_ms", 0), r.get("p99_ms", 0),
                r.get("max_ms", 0), r["mean_batch_size"], r["server_cpu_cores"], r["machine_busy_cores"], r["errors"],
            )  # fmt: skip
    t = report["target"]
    for kind in ("text", "image"):
        k = t[kind]
        log.info(
            "target at %d clients, %s: %.1f req/s = %.1fx the %.2f req/s before batching (%.1fx batching off "
            "here), p99 %.0f ms: %s",
            t["clients"], kind, k["req_per_s"], k["x_baseline"], t["baseline_req_per_s"], k["x_batching_off"] or 0,
            k["p99_ms"] or 0, "met" if k["met"] else "MISSED",
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="trained artifacts (default: models/)")
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT,
        help="root holding data/sample (test rows and images sent) and params.yaml; the server "
        "runs there (default: this checkout)",
    )
    parser.add_argument("--lock", type=Path, default=None, help="dvc.lock for /metadata (default: <data>/dvc.lock)")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the load (default: 60)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: 4)")
    parser.add_argument(
        "--mix",
        default="text=4,image=3,explain=1,batch=1",
        help="request kinds and weights in each client's cycle (default: %(default)s)",
    )
    parser.add_argument("--batch-rows", type=int, default=20, help="rows per batch request (default: 20)")
    parser.add_argument(
        "--max-rss-growth-mb",
        type=float,
        default=200.0,
        help="largest accepted server RSS growth, end - start (default: 200)",
    )
    parser.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling period (default: 0.5)")
    parser.add_argument("--settle-s", type=float, default=2.0, help="wait after the load before the end figure")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s (default: 120)")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="wait for /health, s (default: 300)")
    parser.add_argument("--serve-args", default="", help="extra `rakuten serve` options, one string")
    parser.add_argument("--output", type=Path, default=ROOT / "reports/bench/serve.json")
    parser.add_argument(
        "--section", default="", help="write the report under this key of --output (e.g. soak), keeping its other keys"
    )
    parser.add_argument(
        "--batching",
        action="store_true",
        help="compare batching off and on instead (text and text+image requests, --compare-clients); "
        "written under the key `batching` of --output, keeping its other keys",
    )
    parser.add_argument("--compare-clients", default="1,4,8", help="client counts of --batching (default: 1,4,8)")
    parser.add_argument("--compare-seconds", type=float, default=20.0, help="seconds of each --batching run")
    args = parser.parse_args()
    args.compare_clients = [int(c) for c in args.compare_clients.split(",")]
    if args.clients < 1 or args.seconds <= 0 or args.batch_rows < 1 or min(args.compare_clients) < 1:
        raise SystemExit("--clients, --seconds, --batch-rows and --compare-clients must be positive")
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.batching:
        args.section = args.section or "batching"
        report = compare_batching(args)
        summarise_batching(report)
    else:
        report = run(args)
        summarise(report)
    if args.section:
        merged = json.loads(args.output.read_text()) if args.output.is_file() else {}
        merged[args.section] = report
        write_json(merged, args.output)
    else:
        write_json(report, args.output)
    log.info("wrote %s%s", args.output, f" ({args.section})" if args.section else "")
    if report["failed_checks"]:
        raise SystemExit("failed: " + "; ".join(report["failed_checks"]))


if __name__ == "__main__":
    main()

"""Benchmark of sharing a run: `dvc push` / `dvc pull` time and size of the committed run's artifacts.

Works on the outputs of the last `dvc repro` committed in this repository (dvc.lock at HEAD; their
cache must be here). In a scratch folder: clone A (git clone of HEAD, reading this repository's DVC
cache) pushes to a fresh remote; a fresh clone B pulls everything into an empty cache, then
`dvc status` rehashes B's workspace. Two remotes: a local directory (the default remote's kind) and an
S3-protocol server on 127.0.0.1 (moto's server mode, the dev extra). Prints a table and writes
reports/bench/remote.json.

    python bench/remote.py
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import yaml

from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("rakuten")
ACCESS_KEY, SECRET_KEY = "rakuten-bench-key", "rakuten-bench-secret"  # moto accepts any; never a real account
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def run(*args: str, cwd: Path) -> float:
    """Seconds ``args`` took; a failure stops the benchmark with its last error line."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)}: failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return time.perf_counter() - start


def dvc(*args: str, cwd: Path) -> float:
    """Seconds ``dvc args`` took (this interpreter's DVC)."""
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd)


def clone(scratch: Path, name: str, remote_args: list[list[str]], cache: Path | None = None) -> Path:
    """A git clone of this repository's HEAD in ``scratch``, reading DVC's ``cache`` if given, with the
    ``dvc remote`` commands ``remote_args`` applied."""
    repo = scratch / name
    run("git", "clone", "-q", str(ROOT), str(repo), cwd=scratch)
    if cache is not None:
        dvc("cache", "dir", "--local", str(cache), cwd=repo)
    for args in remote_args:
        dvc("remote", *args, cwd=repo)
    return repo


def folder_size(path: Path) -> tuple[int, int]:
    """Files under ``path`` and their total bytes."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


class S3Server:
    """moto's S3 server (the dev extra; the app DVC's own S3 plugin tests use) on 127.0.0.1 at a free port,
    in a thread of this process: buckets live in memory until :meth:`stop`."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def make_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def measure(scratch: Path, kind: str, remote_args: list[list[str]], stored: Path | None) -> dict:
    a = clone(scratch, f"{kind}-a", remote_args, cache=ROOT / ".dvc" / "cache")
    push_s = dvc("push", "-r", "bench", cwd=a)
    b = clone(scratch, f"{kind}-b", remote_args)
    pull_s = dvc("pull", "-r", "bench", cwd=b)
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=b, env=ENV, capture_output=True, text=True
    ).stdout
    if json.loads(status or "null") != {}:
        raise SystemExit(f"{kind}: the pulled clone is not up to date: {status[:300]}")
    files, size = folder_size(b / ".dvc" / "cache")
    row = {
        "remote": kind,
        "push_s": round(push_s, 1),
        "pull_s": round(pull_s, 1),
        "files": files,
        "mib": round(size / 2**20, 1),
    }
    if stored is not None:
        row["remote_mib"] = round(folder_size(stored)[1] / 2**20, 1)
    LOG.info("%-6s push %6.1f s  pull %6.1f s  %5d files  %7.1f MiB", kind, push_s, pull_s, files, size / 2**20)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench/remote.json")
    args = parser.parse_args()
    setup_logging()
    lock = (ROOT / "dvc.lock").read_text()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rakuten-remote-bench-") as tmp:
        scratch = Path(tmp)
        store = scratch / "store"
        rows.append(measure(scratch, "local", [["add", "-d", "--local", "bench", str(store)]], store))
        server = S3Server()
        try:
            server.make_bucket("rakuten-bench")
            rows.append(
                measure(
                    scratch,
                    "s3",
                    [
                        ["add", "-d", "--local", "bench", "s3://rakuten-bench/store"],
                        ["modify", "--local", "bench", "endpointurl", server.endpoint],
                    ],
                    None,
                )
            )
        finally:
            server.stop()
    write_json(
        {
            "what": "the outputs of dvc.lock at HEAD (the committed default run)",
            "stages": len(yaml.safe_load(lock)["stages"]),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "rows": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()

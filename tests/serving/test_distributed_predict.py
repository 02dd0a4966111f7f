"""`rakuten predict --engine ray` (rakuten.serving.distributed): the same CSV, byte for byte, as the
single-process run, on a real Ray cluster on 127.0.0.1 (a head and two worker nodes, each its own
processes, started with `ray start` and stopped by process group in a finaliser), with the tiny
project's trained models (``tiny_built_repo``); again when a worker process is killed mid-job. The
bookkeeping that proves nothing was lost or repeated, the work-folder sweep, the drill and the
command-line refusals are checked on small inputs without a cluster.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords, IntegrityError
from rakuten.data.ingest import X_COLUMNS, catalog_rows, read_official_csv
from rakuten.serving import cli
from rakuten.serving.distributed import ClusterOptions, in_order
from rakuten.serving.distributed_worker import (
    ERROR,
    INDEX,
    POSITION,
    WORK_PREFIX,
    BatchScorer,
    KillOnce,
    catalog_batch,
    pack_models,
    partitions,
    sweep_work_dirs,
    unpack_models,
)

RAY = str(Path(sys.executable).with_name("ray"))
CHUNK = 12  # the tiny sample's 60 official test rows in 5 batches


# ------------------------------------------------------------------------------- a real local cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sessions(sids: set[int]) -> list[int]:
    """Live processes (zombies excluded) in the sessions ``sids``: everything a `ray start` started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) in sids:
            found.append(int(stat.parent.name))
    return found


def _stop(procs: list[subprocess.Popen]) -> None:
    """Every process of our nodes, by session: SIGTERM, then SIGKILL what is left after a second."""
    sids = {p.pid for p in procs}
    for sig, grace in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 10.0)):
        for pid in _sessions(sids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while _sessions(sids) and time.monotonic() < deadline:
            time.sleep(0.2)
    for p in procs:
        p.wait(timeout=10)
    assert not _sessions(sids), "a Ray process outlived the cluster"


def _node(args: list[str], env: dict[str, str], log: Path, procs: list[subprocess.Popen]) -> None:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        procs.append(
            subprocess.Popen(
                [RAY, "start", *args, "--block"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        )


def _wait_for_cpus(address: str, env: dict[str, str], cpus: int, root: Path) -> None:
    code = (
        "import time, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "deadline = time.monotonic() + 60\n"
        f"while ray.cluster_resources().get('CPU', 0) < {cpus} and time.monotonic() < deadline:\n"
        "    time.sleep(0.3)\n"
        f"assert ray.cluster_resources().get('CPU', 0) >= {cpus}, ray.cluster_resources()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, timeout=90, capture_output=True, text=True)
    if done.returncode != 0:
        logs = "".join(f"--- {log.name}\n{log.read_text()[-2000:]}\n" for log in sorted(Path(root).glob("*.log")))
        raise AssertionError(f"the worker nodes did not join:\n{done.stderr[-2000:]}\n{logs}")


@dataclasses.dataclass
class Cluster:
    address: str
    env: dict[str, str]  # for drivers: the cluster's token; and the nodes' TMPDIR, where actors work
    node_tmp: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head (no CPUs: it schedules nothing) and two 1-CPU worker nodes on 127.0.0.1, no dashboard, no
    usage stats, a random token; every process stopped by session at the end."""
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    node_tmp = tmp_path_factory.mktemp("node_tmp")
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "TMPDIR": str(node_tmp),
        "HF_HUB_OFFLINE": "1",
        "RAY_enable_worker_prestart": "0",  # the actors need fresh processes (their runtime_env): 2 cores to spare
        "RAY_prestart_worker_first_driver": "0",
    }
    port = _free_port()
    common = ["--node-ip-address", "127.0.0.1", "--object-store-memory", str(128 << 20), "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    try:
        head = ["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false", "--temp-dir"]
        head += [str(root), "--dashboard-port", str(_free_port())]
        _node([*head, "--dashboard-agent-listen-port", str(_free_port()), *common], env, root / "head.log", procs)
        _wait_started(procs[-1], root / "head.log")
        for i in (1, 2):  # one after the other: nodes of one machine started together race for their socket names
            worker = ["--address", f"127.0.0.1:{port}", "--num-cpus", "1"]
            _node(
                [*worker, "--dashboard-agent-listen-port", str(_free_port()), *common], env, root / f"w{i}.log", procs
            )
            _wait_started(procs[-1], root / f"w{i}.log")
        _wait_for_cpus(f"127.0.0.1:{port}", env, 2, root)
        yield Cluster(f"127.0.0.1:{port}", env, node_tmp)
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def _wait_started(proc: subprocess.Popen, log: Path) -> None:
    """Until `ray start --block` says its node runs (it blocks afterwards, so its exit is a failure)."""
    deadline = time.monotonic() + 60
    while "Ray runtime started" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


# ------------------------------------------------------------------------------- end to end


def _predict(repo: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    """`rakuten predict` on the tiny project's official test rows, as a user runs it."""
    args = ["--input", "data/sample/X_test_update.csv", "--images", "data/sample/images/image_test"]
    args += ["--models", str(repo / "models"), "--params", str(repo / "params.yaml"), "--output", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "rakuten.serving.cli", "predict", *args, *extra],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def single(tiny_built_repo, tmp_path_factory) -> bytes:
    """The single-process run's CSV (`rakuten predict` in this process: the same code the workers run)."""
    out = tmp_path_factory.mktemp("single") / "predictions.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny_built_repo)
        mp.setenv("HF_HUB_OFFLINE", "1")
        args = ["--input", "data/sample/X_test_update.csv", "--images", "data/sample/images/image_test"]
        assert cli.main(["predict", *args, "--output", str(out), "--chunk-rows", str(CHUNK)]) == 0
    return out.read_bytes()


def _leftovers(cluster: Cluster) -> list[str]:
    return sorted(p.name for p in cluster.node_tmp.glob(f"{WORK_PREFIX}*"))


def test_cluster_run_writes_the_single_process_csv(cluster, tiny_built_repo, single, tmp_path):
    out = tmp_path / "predictions.csv"
    done = _predict(
        tiny_built_repo, out, cluster.env, "--engine", "ray", "--address", cluster.address, "--workers", "2",
        "--chunk-rows", str(CHUNK),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes() == single
    assert len(pd.read_csv(out, index_col=0)) == 60
    assert "on 2 workers" in done.stderr
    assert not _leftovers(cluster)  # each worker's cleaned images were removed


def test_a_worker_killed_mid_job_is_retried_without_losing_or_repeating_rows(
    cluster, tiny_built_repo, single, tmp_path
):
    """The worker scoring row 30 (the third of five batches) SIGKILLs itself once; Ray restarts it and
    scores that batch again. The models are shipped through the object store here (the first run
    read them from the shared path)."""
    marker, out = tmp_path / "killed", tmp_path / "predictions.csv"
    code = (
        "import sys\n"
        "from rakuten.core.logs import setup_logging\n"
        "from rakuten.core.params import load_params\n"
        "from rakuten.serving.distributed import ClusterOptions, KillOnce, predict_distributed\n"
        "setup_logging()\n"
        f"options = ClusterOptions({cluster.address!r}, workers=2, batch_rows={CHUNK}, ship_models=True)\n"
        f"predict_distributed('data/sample/X_test_update.csv', 'data/sample/images/image_test', {str(out)!r},\n"
        f"    'models', load_params('params.yaml'), 'params.yaml', options, kill=KillOnce({str(marker)!r}, 30))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tiny_built_repo, env=cluster.env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    killed = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # the worker process really died
    assert out.read_bytes() == single
    assert not _leftovers(cluster)  # the killed worker's folder was swept by its successor


# ------------------------------------------------------------------------------- without a cluster


def _x(tmp_path: Path, n: int = 5) -> tuple[Path, pd.DataFrame]:
    x = pd.DataFrame(
        {
            "designation": [f"produit {i}" for i in range(n)],
            "description": ["" if i % 2 else f"desc {i}" for i in range(n)],
            "productid": [100 + i for i in range(n)],
            "imageid": [200 + i for i in range(n)],
        },
        index=[9000 + 7 * i for i in range(n)],
    )
    path = tmp_path / "X.csv"
    x.to_csv(path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "image_201_product_101.jpg").write_bytes(b"not a jpeg")
    return path, read_official_csv(path, X_COLUMNS)


def test_batches_rebuild_the_catalog_rows_of_the_whole_file(tmp_path):
    path, x = _x(tmp_path, 7)
    whole, _ = catalog_rows(x, path, tmp_path / "images")
    parts = partitions(x, 3)
    assert [len(p) for p in parts] == [3, 3, 1]
    rebuilt = pd.concat([catalog_batch(p, path, tmp_path / "images") for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(rebuilt, whole)


def _tables(positions: list[list[int]]) -> list[pd.DataFrame]:
    return [pd.DataFrame({INDEX: [1000 + p for p in ps], "prdtypecode": 10, POSITION: ps}) for ps in positions]


def test_in_order_restores_the_index_and_refuses_lost_repeated_or_reordered_rows():
    out = pd.concat(in_order(_tables([[0, 1], [2], [3, 4]]), 5))
    assert out.index.tolist() == [1000, 1001, 1002, 1003, 1004]
    assert list(out.columns) == ["prdtypecode"]
    for bad, n in (([[0, 1], [3, 4]], 5), ([[0, 1], [1, 2]], 3), ([[2], [0, 1]], 3), ([[0, 1]], 3), ([[0, 1, 2]], 2)):
        with pytest.raises(PipelineError, match="refusing to write"):
            list(in_order(_tables(bad), n))


def test_sweep_removes_only_the_folders_of_dead_workers(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = tmp_path / f"{WORK_PREFIX}{int(gone.stdout)}-a", tmp_path / f"{WORK_PREFIX}{os.getpid()}-b"
    other = tmp_path / "rakuten-predict-123-c"
    for folder in (dead, alive, other):
        (folder / "images").mkdir(parents=True)
    sweep_work_dirs(tmp_path)
    assert not dead.exists() and alive.exists() and other.exists()


def test_kill_once_kills_the_worker_of_its_row_and_only_once(tmp_path, monkeypatch):
    kills = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
    marker = tmp_path / "killed"
    drill = KillOnce(str(marker), 7)
    drill(np.array([0, 1, 2]))  # not its batch
    assert not marker.exists() and kills == []
    drill(np.arange(5, 9))
    assert kills == [(os.getpid(), signal.SIGKILL)] and marker.read_text() == str(os.getpid())
    drill(np.arange(5, 9))  # the retried batch goes through
    assert len(kills) == 1


def test_a_worker_that_meets_an_expected_error_sends_back_its_one_line(tiny_built_repo, tmp_path):
    """The actor's own code, in this process: models that fail their hash check, or an image folder the
    worker cannot see, are answered to every batch as the error line, which the driver raises (Ray would
    only hand back the remote traceback)."""
    repo = tiny_built_repo
    records = ArtifactRecords.from_lock(repo / "dvc.lock")
    stage, out = records.outs["models/tfidf_svm"]
    tampered = dataclasses.replace(
        records, outs={**records.outs, "models/tfidf_svm": (stage, {**out, "md5": "0" * 32})}
    )
    x_csv, images = repo / "data/sample/X_test_update.csv", repo / "data/sample/images/image_test"
    batch = partitions(read_official_csv(x_csv, X_COLUMNS), 4)[0]
    for image_dir, recs, message in (
        (images, tampered, r"models/tfidf_svm: md5 \w+\.dir, expected 0{32}"),
        (tmp_path / "elsewhere", records, "image folder not found on worker node"),
    ):
        worker = BatchScorer(str(x_csv), str(image_dir), str(repo / "models"), None, "params.yaml", recs)
        answer = worker(batch)
        assert list(answer.columns) == [ERROR]
        with pytest.raises(PipelineError, match=message):
            list(in_order([answer], 60))


def test_shipped_models_are_checked_against_the_same_lock(tiny_built_repo, tmp_path):
    """What an actor does with shipped files: written under its own folder at their project path, then
    verified with the project's dvc.lock, so a changed byte is refused there as it is at home."""
    records = ArtifactRecords.from_lock(tiny_built_repo / "dvc.lock")
    files = pack_models(tiny_built_repo / "models")
    models_dir, shipped = unpack_models(files, tmp_path / "a", "models", records)
    for name in ("fusion", "tfidf_svm", "camembert"):
        assert shipped.verify(models_dir / name) == records.outs[f"models/{name}"][1]["md5"]
    victim = next(rel for rel in files if rel.startswith("tfidf_svm/"))
    models_dir, shipped = unpack_models({**files, victim: b"tampered"}, tmp_path / "b", "models", records)
    with pytest.raises(IntegrityError):
        shipped.verify(models_dir / "tfidf_svm")


def _cli(tmp_path: Path, *extra: str) -> int:
    path, _ = _x(tmp_path)
    base = ["predict", "--input", str(path), "--images", str(tmp_path / "images"), "--output", str(tmp_path / "o.csv")]
    return cli.main([*base, "--models", str(tmp_path / "models"), *extra])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--address", "auto"], "--address: only with --engine ray"),
        (["--ship-models", "--max-restarts", "1"], "--max-restarts, --ship-models: only with --engine ray"),
        (["--engine", "ray", "--explain", "e.jsonl"], "--explain runs in one process"),
        (["--engine", "ray", "--work-dir", "w"], "--work-dir: not with --engine ray"),
        (["--engine", "ray", "--max-restarts", "-1"], "--max-restarts -1: expected an integer >= 0"),
        (["--engine", "ray", "--cpus-per-worker", "0"], "--cpus-per-worker 0.0: expected a number > 0"),
        (["--engine", "ray", "--address", "ray://h:10001"], "--address ray://h:10001: Ray Data does not run through"),
    ],
)
def test_cluster_options_are_refused_in_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    assert _cli(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err
    assert not (tmp_path / "o.csv").exists()


def test_options_default_to_one_actor_per_batch_of_chunk_rows():
    options = ClusterOptions()
    assert (options.address, options.workers, options.max_restarts, options.ship_models) == ("local", 1, 3, False)

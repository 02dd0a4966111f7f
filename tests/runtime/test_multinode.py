"""Training on several machines (``nnodes``, ``node_rank``, ``rdzv_endpoint``, ``rdzv_id``): the command line,
the refusals, and a real run of two "machines" on 127.0.0.1.

The two-node test starts two launching processes as two machines would start the stage, each in its own
working directory (its own workspace): node_rank 1 first, then node_rank 0, both with ``nnodes: 2`` and
the same endpoint on a free local port, one gloo process each. Each rank takes one real DDP step through
the project's :func:`rakuten.models.resnet50.parallel.wrap_ddp` on its half of a global batch, and an
all-reduce. Node 1 starts first on purpose: with torch's c10d rendezvous the earlier launcher (lower pid,
same host) becomes global rank 0 whatever its ``--node_rank``, and that node would write the outputs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rakuten.core.errors import PipelineError
from rakuten.runtime import distributed as D
from rakuten.runtime import launcher as L
from rakuten.runtime.knobs import LaunchKnobs

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("camembert", "resnet50")


def _nodes(**knobs) -> LaunchKnobs:
    return LaunchKnobs(**{"launcher": "torchrun", "nnodes": 2, "rdzv_endpoint": "10.0.0.1:29400", **knobs})


# ------------------------------------------------------------------------------------- command line


def test_two_machines_join_node_0_by_its_endpoint_with_a_static_rendezvous():
    argv = D.launch_command("stages/resnet50.py", 4, ["--x"], python="/venv/bin/python", nodes=_nodes(node_rank=1))
    assert argv == [
        "/venv/bin/python",
        "-m",
        "rakuten.runtime.distributed",
        "--nnodes=2",
        "--node_rank=1",
        "--rdzv_backend=static",  # c10d would ignore --node_rank
        "--rdzv_endpoint=10.0.0.1:29400",
        "--rdzv_id=rakuten",
        "--nproc_per_node=4",
        "stages/resnet50.py",
        "--x",
    ]
    # torch's own parser reads them as meant (the flag names of the installed torch)
    from torch.distributed.run import parse_args

    args = parse_args(argv[3:])
    assert (args.nnodes, args.node_rank, args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == (
        "2",
        1,
        "static",
        "10.0.0.1:29400",
        "rakuten",
    )
    assert (args.nproc_per_node, args.standalone, args.training_script) == ("4", False, "stages/resnet50.py")


def test_one_machine_keeps_the_standalone_command():
    one = [sys.executable, "-m", "rakuten.runtime.distributed", "--standalone", "--nproc_per_node=2", "s.py"]
    assert D.launch_command("s.py", 2) == D.launch_command("s.py", 2, nodes=LaunchKnobs(launcher="torchrun")) == one


class _Finished:
    def wait(self, timeout=None):
        return 0


@pytest.fixture
def fake_launcher(monkeypatch) -> list[list[str]]:
    """The torchrun launches asked for (none runs; each exits 0); any other subprocess runs as usual (a
    first ``import torch`` looks up libraries with one)."""
    for name in D.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    started: list[list[str]] = []
    real = subprocess.Popen

    def popen(argv, *args, **kwargs):
        if list(argv)[1:3] != ["-m", "rakuten.runtime.distributed"]:
            return real(argv, *args, **kwargs)
        started.append(list(argv))
        return _Finished()

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


@pytest.mark.param_effect(
    "camembert.nnodes",
    "camembert.node_rank",
    "camembert.rdzv_endpoint",
    "camembert.rdzv_id",
    "resnet50.nnodes",
    "resnet50.node_rank",
    "resnet50.rdzv_endpoint",
    "resnet50.rdzv_id",
)
@pytest.mark.parametrize("section", SECTIONS)
def test_node_knobs_choose_the_rendezvous(section, fake_launcher, monkeypatch, caplog):
    """The knobs as params.yaml gives them: one machine, or this machine as node ``node_rank`` of ``nnodes``."""
    from rakuten.core.config import from_params
    from rakuten.models.camembert.config import CamembertConfig
    from rakuten.models.resnet50.config import ResnetConfig
    from tests.helpers.stagerun import default_params, with_overrides

    monkeypatch.setattr(sys, "argv", [f"stages/{section}.py"])
    declaration = CamembertConfig if section == "camembert" else ResnetConfig

    def start(**knobs) -> list[str] | None:
        fake_launcher.clear()
        params = with_overrides(default_params(), {f"{section}.{k}": v for k, v in knobs.items()})
        cfg = from_params(declaration, params, section)
        with pytest.raises(SystemExit) as done:
            D.relaunch(cfg.launcher, cfg.processes, section, nodes=cfg)
        assert done.value.code == 0
        return fake_launcher[0]

    one = start(launcher="torchrun", processes=2)
    assert one[3:5] == ["--standalone", "--nproc_per_node=2"]
    caplog.set_level("INFO", logger="rakuten")
    two = start(launcher="torchrun", nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400", rdzv_id="job7")
    assert two[3:9] == [
        "--nnodes=2",
        "--node_rank=1",
        "--rdzv_backend=static",
        "--rdzv_endpoint=10.0.0.1:29400",
        "--rdzv_id=job7",
        "--nproc_per_node=1",  # one process per machine still launches: the other machine is the second rank
    ]
    assert f"{section}: node 1 trained its share; node 0 writes the outputs" in caplog.text
    three = start(launcher="torchrun", nnodes=3, node_rank=0, rdzv_endpoint="h:1")
    assert three[3:5] == ["--nnodes=3", "--node_rank=0"]


@pytest.mark.parametrize(
    "nodes, launcher, message",
    [
        (
            _nodes(rdzv_endpoint=""),
            "torchrun",
            "resnet50.nnodes = 2 needs resnet50.rdzv_endpoint, the host:port of node 0",
        ),
        (_nodes(node_rank=2), "torchrun", "resnet50.node_rank = 2, expected 0 .. 1 (resnet50.nnodes = 2)"),
        (LaunchKnobs(node_rank=1), "torchrun", "resnet50.node_rank = 1, expected 0 .. 0 (resnet50.nnodes = 1)"),
        (_nodes(rdzv_endpoint="10.0.0.1"), "torchrun", "resnet50.rdzv_endpoint = '10.0.0.1', expected host:port"),
        (_nodes(rdzv_endpoint="10.0.0.1:0"), "torchrun", "resnet50.rdzv_endpoint = '10.0.0.1:0', expected"),
        (_nodes(rdzv_endpoint="10.0.0.1:99999"), "torchrun", "expected host:port of node 0"),
        (_nodes(rdzv_endpoint="a b:29400"), "torchrun", "resnet50.rdzv_endpoint = 'a b:29400'"),
        (_nodes(rdzv_endpoint="http://h:29400"), "torchrun", "expected host:port"),
        (_nodes(rdzv_id=""), "torchrun", "resnet50.rdzv_id = '', expected the job's name"),
        (_nodes(), "none", "resnet50.nnodes = 2 needs resnet50.launcher = 'torchrun', got 'none'"),
        (
            LaunchKnobs(rdzv_endpoint="10.0.0.1:29400"),
            "torchrun",
            "resnet50.rdzv_endpoint = '10.0.0.1:29400' with resnet50.nnodes = 1; expected an empty endpoint",
        ),
        (_nodes(nnodes=0), "torchrun", "resnet50.nnodes = 0, expected >= 1"),
    ],
)
def test_bad_node_knobs_are_one_line_before_any_process_starts(fake_launcher, nodes, launcher, message):
    with pytest.raises(PipelineError) as err:
        D.relaunch(launcher, 2, "resnet50", nodes=nodes)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert fake_launcher == []


def test_good_endpoints_pass():
    for endpoint in ("10.0.0.1:29400", "node-0.cluster.local:1", "[fe80::1]:65535", "localhost:29400"):
        L.check_nodes(_nodes(rdzv_endpoint=endpoint), "torchrun", "k")


def test_the_global_batch_divides_over_every_machine(fake_launcher):
    with pytest.raises(PipelineError, match=r"resnet50.demo.batch_size = 6 is not a multiple of the 4 processes"):
        D.relaunch("torchrun", 2, "resnet50", batch=("resnet50.demo.batch_size", 6), nodes=_nodes())
    assert fake_launcher == []


def test_a_machine_that_cannot_join_says_so_in_one_line(monkeypatch, capsys):
    import torch.distributed as dist
    from torch.distributed import run as torchrun

    def unreachable(argv):
        raise dist.DistNetworkError("The client socket has timed out after 3000ms while trying to connect to (h, 1).")

    monkeypatch.setattr(torchrun, "main", unreachable)
    assert D.launcher_main(["--nnodes=2"]) == 1
    assert capsys.readouterr().err == (
        "error: torchrun: DistNetworkError: The client socket has timed out after 3000ms while trying to connect "
        "to (h, 1); are all nnodes machines started, with node 0's host:port as rdzv_endpoint, reachable from "
        "this one?\n"
    )


def test_the_writer_is_global_rank_0_not_each_machines_local_rank_0(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")  # the first process of node 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert D.world() == D.World(2, 0, 4) and not D.is_main()
    monkeypatch.setenv("RANK", "0")
    assert D.is_main()


@pytest.mark.parametrize("section", SECTIONS)
def test_the_stage_scripts_pass_their_node_knobs(section, fake_launcher, monkeypatch, tmp_path):
    """The stage itself (not a hand-made call) relaunches as node 1 of 2 when params.yaml says so."""
    import runpy

    import yaml

    from tests.helpers.stagerun import default_params, with_overrides

    knobs = {"launcher": "torchrun", "nnodes": 2, "node_rank": 1, "rdzv_endpoint": "127.0.0.1:29400"}
    params = with_overrides(default_params(), {f"{section}.{k}": v for k, v in knobs.items()})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"stages/{section}.py"])
    stage_main = runpy.run_path(str(REPO / "stages" / f"{section}.py"), run_name="stage")["main"]
    with pytest.raises(SystemExit):
        stage_main()
    assert fake_launcher and "--node_rank=1" in fake_launcher[0]


# ------------------------------------------------------------------------------------- two machines

NODE = """
import json
import sys

import rakuten
from rakuten.core.io import write_json
from rakuten.core.stage import run_stage
from rakuten.runtime import distributed as D
from rakuten.runtime.knobs import LaunchKnobs


def main():
    nodes = LaunchKnobs(launcher="torchrun", nnodes=2, node_rank=int(sys.argv[1]), rdzv_endpoint=sys.argv[2],
                        rdzv_id="two-nodes-test")
    D.relaunch("torchrun", 1, "resnet50", batch=("resnet50.demo.batch_size", 4), nodes=nodes)
    import torch
    from rakuten.models.resnet50.parallel import global_sum, wrap_ddp
    from rakuten.runtime.torch_setup import Runtime

    here = D.init("cpu")
    torch.manual_seed(0)  # the same network and global batch on every rank
    net, x, y = torch.nn.Linear(3, 2), torch.randn(4, 3), torch.randn(4, 2)
    one = torch.nn.Linear(3, 2)
    one.load_state_dict(net.state_dict())
    torch.nn.functional.mse_loss(one(x), y).backward()  # one process: the whole batch
    torch.optim.SGD(one.parameters(), lr=0.5).step()
    ddp = wrap_ddp(net, Runtime("cpu", "fp32"), here)
    mine = slice(2 * here.rank, 2 * here.rank + 2)  # each rank: its half of the global batch
    torch.nn.functional.mse_loss(ddp(x[mine]), y[mine]).backward()  # DDP averages the two gradients
    torch.optim.SGD(net.parameters(), lr=0.5).step()
    weights = torch.cat([p.detach().flatten() for p in net.parameters()])
    result = {
        "rank": here.rank, "local_rank": here.local_rank, "size": here.size, "main": D.is_main(),
        "sum": global_sum(torch.tensor([here.rank + 1.0])).item(),
        "weights": weights.tolist(),
        "as_one_process": torch.allclose(weights, torch.cat([p.detach().flatten() for p in one.parameters()]),
                                         atol=1e-6),
    }
    sys.stdout.write("result " + json.dumps(result) + "\\n")
    sys.stdout.flush()
    if D.is_main():  # what a stage does: rank 0 writes
        write_json(result, "out/result.json")


run_stage(main)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> dict:
    """Two launching processes, node_rank 1 then 0, each in its own workspace; both stopped within 120 s."""
    root = tmp_path_factory.mktemp("two_nodes")
    script = root / "node.py"
    script.write_text(NODE)
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in D.TORCHRUN_ENV}
    env |= {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    procs, logs = {}, {}
    try:
        for rank in (1, 0):
            work = root / f"node{rank}"
            work.mkdir()
            logs[rank] = (open(root / f"out{rank}", "w+"), open(root / f"err{rank}", "w+"))
            procs[rank] = subprocess.Popen(
                [sys.executable, str(script), str(rank), endpoint],
                cwd=work,
                env=env,
                stdout=logs[rank][0],
                stderr=logs[rank][1],
                start_new_session=True,  # the test can stop each node's launcher and ranks together
            )
            time.sleep(0.3)  # node 1's launcher has the lower pid: c10d would have made it rank 0
        deadline = time.monotonic() + 120
        codes = {rank: proc.wait(timeout=max(1.0, deadline - time.monotonic())) for rank, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for out, err in logs.values():
            out.close()
            err.close()
    read = {rank: ((root / f"out{rank}").read_text(), (root / f"err{rank}").read_text()) for rank in procs}
    results = {
        rank: [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("result ")]
        for rank, (out, _) in read.items()
    }
    return {"codes": codes, "logs": read, "results": results, "root": root, "endpoint": endpoint}


def test_two_machines_train_one_ddp_step_and_only_node_0_writes(two_nodes):
    codes, logs, results, root = two_nodes["codes"], two_nodes["logs"], two_nodes["results"], two_nodes["root"]
    assert codes == {0: 0, 1: 0}, {rank: err[-3000:] for rank, (_, err) in logs.items()}
    for rank in (0, 1):
        (result,) = results[rank]  # one rank per machine
        # node_rank is kept: node r holds global rank r (one process each), a group of 2 over both machines
        assert (result["rank"], result["local_rank"], result["size"], result["main"]) == (rank, 0, 2, rank == 0)
        assert result["sum"] == 3.0  # 1 + 2: the all-reduce saw both machines
        assert result["as_one_process"], result  # DDP over two machines = one process on the global batch
    assert results[0][0]["weights"] == results[1][0]["weights"]
    err0, err1 = logs[0][1], logs[1][1]
    assert f"--nnodes=2 --node_rank=1 --rdzv_backend=static --rdzv_endpoint={two_nodes['endpoint']}" in err1
    assert "launching 1 processes on node 0 of 2" in err0
    assert "resnet50: node 1 trained its share; node 0 writes the outputs, none are written here" in err1
    # only global rank 0 wrote, in node 0's workspace; node 1's workspace holds nothing
    assert _files(root / "node0") == ["out/result.json"] and _files(root / "node1") == []
    assert json.loads((root / "node0" / "out" / "result.json").read_text())["rank"] == 0
    for err in (err0, err1):  # a clean end on both machines: no traceback, no store error at the exit barrier
        assert "Traceback" not in err and "Error waiting on exit barrier" not in err, err[-3000:]
        assert "Connection reset" not in err, err[-3000:]

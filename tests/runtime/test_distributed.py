"""Data-parallel training of the deep stages (``rakuten.runtime.distributed``): a real 2-process gloo run on CPU.

The end-to-end test writes the stage inputs of the tiny catalog into two working directories and
runs both deep stages in each: once in one process (``launcher: none``), once with ``launcher:
torchrun, processes: 2``, started as DVC starts a stage (plain ``python <script>``): the first stage
re-executes the script under ``python -m rakuten.runtime.distributed --standalone --nproc_per_node=2`` (torchrun),
and each rank runs both stages. It checks that two ranks joined a gloo group, that only rank 0
wrote (the same files as one process, one dvclive folder per stage, no temporary left), and that
val/test weighted F1 are those of one process within :data:`TOLERANCE`.

Why a tolerance and not equality: the 2-process run optimises the same objective (same global
batch, same steps, same warm-up; ResNet's loss is the global weighted mean) but not with the same
arithmetic: each rank draws its own share of the rows (ResNet's DistributedSampler: another data
order), its own dropout and augmentation random numbers, its own BatchNorm statistics over half a
batch (torch has no CPU SyncBatchNorm; on GPUs SyncBatchNorm is used), and gradients are summed in
another order; these small from-scratch models amplify any difference. Measured with these configs
(seeds 42 / 0 / 1), |weighted F1 (2 processes) - (1 process)| on val / test: camembert 0.012 / 0.001,
0.033 / 0.057, 0.070 / 0.069; resnet50 0.015 / 0.045, 0.018 / 0.004, 0.024 / 0.025; the spread of one
process over those seeds is larger (camembert test 0.031-0.166). On the demo profile and the default
sample: camembert 0.065 / 0.073, resnet50 0.020 / 0.079. Hence :data:`TOLERANCE` = 0.1 (one of the 57
val / 57 test rows moves weighted F1 by about 0.02). What is equal: CamemBERT's global steps see the
same rows as one process, so its first train-loss point (mean of steps 1-5) agrees within 1e-4
(measured 3e-6; a loss scaled by the process count would be twice as large).

This file is also the script the end-to-end test runs (``python tests/runtime/test_distributed.py
camembert resnet50``: each stage's ``main`` in turn in one interpreter, the start-up of two
processes per rank saved), so the run stays within the file's budget of 60 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import rakuten  # noqa: F401 - first: the numeric pins of rakuten.core.numerics apply before torch loads
from tests.helpers.tiny_profile import TINY_PARAMS  # noqa: E402 - the end-to-end tests' tiny CamemBERT

REPO = Path(__file__).resolve().parents[2]
#: |weighted F1 (2 gloo processes) - weighted F1 (1 process)| allowed on val and on test, tiny catalog
TOLERANCE = 0.1
STAGES = ("camembert", "resnet50")
#: tiny runs: CamemBERT 1 layer x 64 for 8 epochs (it learns: val weighted F1 ~0.1, majority 0.02),
#: ResNet18 at 32 px on 192 rows for 1 epoch
OVERRIDES: dict = {
    **{key: TINY_PARAMS[key] for key in ("camembert.demo.max_length", "camembert.demo.scratch")},
    "camembert.demo.epochs": 8,
    "camembert.demo.batch_size": 16,
    "camembert.demo.learning_rate": 0.003,
    "camembert.demo.group_by_length": False,
    "camembert.eval_batch_size": 64,
    "resnet50.demo.max_train_rows": 192,
    "resnet50.demo.epochs": 1,
    "resnet50.demo.batch_size": 32,
    "resnet50.eval_batch_size": 64,
}


def run_stage_mains(stages: list[str]) -> None:
    """Each stage script's ``main`` in turn, in this process (what ``python stages/<x>.py`` runs)."""
    from rakuten.core.stage import run_stage

    mains = [runpy.run_path(str(REPO / "stages" / f"{stage}.py"), run_name="stage")["main"] for stage in stages]

    def run_all() -> None:
        for stage_main in mains:
            stage_main()

    run_stage(run_all)


if __name__ == "__main__":  # the script of the end-to-end test (see the module docstring)
    run_stage_mains(sys.argv[1:])
    sys.exit(0)


import numpy as np  # noqa: E402 - after the script entry point: a rank needs none of the test imports
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from rakuten.core.errors import PipelineError  # noqa: E402
from rakuten.runtime import distributed as D  # noqa: E402
from tests.helpers.deep_frames import model_frame  # noqa: E402
from tests.helpers.stagerun import default_params, with_overrides  # noqa: E402

# ------------------------------------------------------------------------------------ end to end


def _write_inputs(frame: pd.DataFrame, workdir: Path, overrides: dict) -> None:
    """The files the two deep stages read (text_clean / image_clean outputs) and params.yaml."""
    (workdir / "data" / "interim").mkdir(parents=True)
    (workdir / "data" / "processed").mkdir(parents=True)
    frame[["row_id", "prdtypecode"]].to_parquet(workdir / "data/interim/catalog.parquet")
    frame[["row_id", "split"]].to_parquet(workdir / "data/interim/training_split.parquet")  # label_audit's
    frame[["row_id", "text_light"]].assign(text_norm=frame["text_light"].str.lower()).to_parquet(
        workdir / "data/processed/text.parquet"
    )
    frame[["row_id", "clean_path", "readable", "keep_for_train", "sample_weight"]].to_parquet(
        workdir / "data/processed/image_quality.parquet"
    )
    for section in ("text_clean", "image_clean"):
        (workdir / "data" / "processed" / f"{section}.json").write_text(json.dumps({section: {}}))
    params = with_overrides(default_params(), {**OVERRIDES, **overrides})
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _weighted_f1(workdir: Path, stage: str) -> dict[str, float]:
    metrics = json.loads((workdir / "reports" / "metrics" / f"{stage}.json").read_text())
    return {split: metrics[split]["weighted_f1"] for split in ("val", "test")}


@pytest.fixture(scope="module")
def two_runs(tiny_split, tmp_path_factory) -> dict:
    """Both deep stages run in one process, and with ``launcher: torchrun, processes: 2`` (2 gloo ranks)."""
    frame = model_frame(tiny_split)
    single, double = tmp_path_factory.mktemp("one_process"), tmp_path_factory.mktemp("two_processes")
    _write_inputs(frame, single, {})
    _write_inputs(
        frame, double, {f"{s}.{k}": v for s in STAGES for k, v in (("launcher", "torchrun"), ("processes", 2))}
    )
    before = {"single": _files(single), "double": _files(double)}
    tmp = tmp_path_factory.mktemp("tmpdir")  # the ranks' temporary folders (the Trainer's checkpoints)
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *STAGES],
        cwd=double,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    cwd = Path.cwd()
    os.chdir(single)
    try:  # in this process: no second interpreter start-up
        for stage in STAGES:
            runpy.run_path(str(REPO / "stages" / f"{stage}.py"), run_name="stage")["main"]()
    finally:
        os.chdir(cwd)
    return {"single": single, "double": double, "run": done, "before": before, "tmp": tmp}


@pytest.mark.param_effect("camembert.launcher", "camembert.processes", "resnet50.launcher", "resnet50.processes")
@pytest.mark.slow
def test_two_gloo_processes_train_both_stages_and_only_rank_0_writes(two_runs):
    done = two_runs["run"]
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr
    assert "launching 2 processes" in log and "rakuten.runtime.distributed --standalone --nproc_per_node=2" in log
    for rank in (0, 1):  # both ranks joined one gloo group and trained each model
        assert f"rank {rank} of 2 joined the gloo process group" in log
        assert log.count(f"CPU threads, rank {rank} of 2") == len(STAGES), log[-3000:]
    assert log.count("rank 1: training done; rank 0 writes the outputs") == len(STAGES)
    single, double = two_runs["single"], two_runs["double"]
    # only rank 0 wrote: exactly the files one process writes, nothing twice, no temporary left
    assert _files(double) == _files(single) != two_runs["before"]["single"]
    assert sorted(p.name for p in (double / "reports" / "live").iterdir()) == sorted(STAGES)
    assert not list(two_runs["tmp"].glob("camembert-ckpt-*"))  # the shared checkpoint folder was removed
    for stage in STAGES:
        one, two = _weighted_f1(single, stage), _weighted_f1(double, stage)
        for split in ("val", "test"):
            assert abs(one[split] - two[split]) <= TOLERANCE, (stage, split, one, two)
        train = json.loads((double / "reports" / "training" / f"{stage}.json").read_text())
        if stage == "camembert":  # same rows in each global step, same loss scale: the first train-loss point
            first = [
                pd.read_csv(d / "reports/live/camembert/plots/metrics/loss.tsv", sep="\t")["loss"].iloc[0]
                for d in (single, double)
            ]  # (mean of steps 1-5) of one and two processes agree closely
            assert abs(first[0] - first[1]) <= 1e-4, first
        assert train["rows"] == json.loads((single / "reports" / "training" / f"{stage}.json").read_text())["rows"]


# ------------------------------------------------------------------------------------- launcher


def test_launch_command_is_torchrun_standalone_on_this_interpreter():
    argv = D.launch_command("stages/camembert.py", 4, ["--x"], python="/venv/bin/python")
    assert argv == [
        "/venv/bin/python",
        "-m",
        "rakuten.runtime.distributed",
        "--standalone",
        "--nproc_per_node=4",
        "stages/camembert.py",
        "--x",
    ]
    assert D.launch_command("s.py", 2)[0] == sys.executable


def _no_torchrun(monkeypatch) -> None:
    for name in D.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


class _FakeProcess:
    started: list[list[str]] = []

    def __init__(self, argv, env=None):
        _FakeProcess.started.append(list(argv))
        self.env = env

    def wait(self, timeout=None):
        return 3


def test_relaunch_starts_torchrun_once_and_exits_with_its_code(monkeypatch):
    _no_torchrun(monkeypatch)
    _FakeProcess.started = []
    monkeypatch.setattr(D.subprocess, "Popen", _FakeProcess)
    monkeypatch.setattr(sys, "argv", ["stages/resnet50.py"])
    D.relaunch("none", 4, "resnet50")  # launcher none: this process trains
    D.relaunch("torchrun", 1, "resnet50")  # one process: no launcher needed
    assert _FakeProcess.started == []
    with pytest.raises(SystemExit) as code:
        D.relaunch("torchrun", 2, "resnet50", batch=("resnet50.demo.batch_size", 64))
    assert code.value.code == 3
    assert _FakeProcess.started == [
        [
            sys.executable,
            "-m",
            "rakuten.runtime.distributed",
            "--standalone",
            "--nproc_per_node=2",
            "stages/resnet50.py",
        ]
    ]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    D.relaunch("torchrun", 2, "resnet50")  # already a torchrun worker: never relaunched
    assert len(_FakeProcess.started) == 1
    assert D.world() == D.World(1, 1, 2) and not D.is_main() and D.launched()


STOPPABLE = """
import os
import time

import rakuten
from rakuten.runtime import distributed as D
from rakuten.core.stage import run_stage


def main():
    D.relaunch("torchrun", 2, "camembert")
    os.write(1, f"ready {os.getppid()}\\n".encode())   # one write (the two ranks share the pipe); parent: the launcher
    time.sleep(60)


run_stage(main)
"""


@pytest.mark.parametrize("target", ["stage", "launcher"])
def test_sigterm_stops_the_ranks_in_one_line_without_a_launcher_traceback(tmp_path, target):
    """A real 2-rank launch of a script that waits; SIGTERM to the stage (dvc, a scheduler) or to the
    launcher alone. torch's launcher used to print its SignalException traceback (twice when the
    signal reached it both from the process group and from the stage)."""
    import queue
    import signal
    import threading

    script = tmp_path / "stage.py"
    script.write_text(STOPPABLE)
    env = {k: v for k, v in os.environ.items() if k not in D.TORCHRUN_ENV} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    try:
        # a thread reads the lines: select() on a buffered pipe misses a second line already buffered
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        ready_ranks: list[str] = []  # each rank's parent pid: the launcher's
        seen: list[str] = []
        deadline = time.monotonic() + 180  # three torch imports on 2 busy cores can take a minute
        while len(ready_ranks) < 2:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            seen.append(line)
            assert line, f"the ranks did not start (exit code {proc.poll()}; stdout {seen})"
            if line.startswith("ready"):
                ready_ranks.append(line.split()[1])
        os.kill(proc.pid if target == "stage" else int(ready_ranks[0]), signal.SIGTERM)
        proc.wait(timeout=60)
        err = proc.stderr.read()  # a few lines: they fit the pipe while it waits
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    stopped = "error: camembert: stopped by SIGTERM" + ("" if target == "stage" else " (the torchrun launcher)")
    assert errors == ["error: interrupted; no partial output was kept"] * 2 + [f"{stopped}; no partial output was kept"]
    assert proc.returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: D.relaunch("torchrun", 3, "camembert", batch=("camembert.demo.batch_size", 32)),
            "camembert.demo.batch_size = 32 is not a multiple of the 3 processes",
        ),
        (lambda: D.relaunch("mpirun", 2, "camembert"), "camembert.launcher = 'mpirun', expected one of none, torchrun"),
        (
            lambda: D.per_rank_batch(64, 3, "resnet50.full.batch_size"),
            "resnet50.full.batch_size = 64 is not a multiple",
        ),
    ],
)
def test_refusals_are_one_line_naming_the_key(monkeypatch, call, message):
    _no_torchrun(monkeypatch)
    monkeypatch.setattr(D.subprocess, "Popen", _FakeProcess)
    with pytest.raises(PipelineError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_processes_zero_means_one_per_gpu(monkeypatch):
    _no_torchrun(monkeypatch)
    monkeypatch.setattr(D, "visible_gpus", lambda: 0)
    with pytest.raises(PipelineError, match="resnet50.processes = 0 means one process per visible GPU, but no CUDA"):
        D.relaunch("torchrun", 0, "resnet50")
    monkeypatch.setattr(D, "visible_gpus", lambda: 8)
    assert D.check_launch("torchrun", 0, "resnet50") == 8 and D.check_launch("none", 0, "resnet50") == 1


def test_per_rank_batch_keeps_the_global_batch():
    assert [D.per_rank_batch(64, n, "k") for n in (1, 2, 4, 8)] == [64, 32, 16, 8]
    assert D.backend("cuda") == "nccl" and D.backend("cpu") == "gloo"
    assert D.broadcast({"a": 1}) == {"a": 1}  # no process group: the value itself


# ------------------------------------------------------------------------------------- samplers


def test_sharded_weighted_sampler_splits_one_seeded_draw_between_ranks():
    from rakuten.models.resnet50.parallel import ShardedWeightedSampler

    weights = np.array([1.0, 1.0, 4.0, 0.0, 2.0, 1.0, 3.0])
    shares = [ShardedWeightedSampler(weights, 7, rank, 2, seed=5) for rank in (0, 1)]
    for s in shares:
        s.set_epoch(1)
    drawn = [list(s) for s in shares]
    assert [len(d) for d in drawn] == [len(s) for s in shares] == [4, 4]
    whole = torch.multinomial(
        torch.as_tensor(weights), 7, replacement=True, generator=torch.Generator().manual_seed(6)
    ).tolist()
    assert sorted(drawn[0] + drawn[1]) == sorted(whole + whole[:1])  # one draw, padded to 8, split in two
    assert 3 not in drawn[0] + drawn[1]  # weight 0 is never drawn
    shares[0].set_epoch(2)
    assert list(shares[0]) != drawn[0]  # a new draw each epoch


def test_training_arguments_split_the_global_batch():
    from rakuten.models.camembert import model as C
    from rakuten.models.camembert.trainer_setup import training_arguments
    from rakuten.runtime.torch_setup import Runtime

    cfg = C.CamembertConfig().with_active(batch_size=32)
    one = training_arguments(cfg, Runtime("cpu", "fp32"), 426, "/tmp/x")
    two = training_arguments(cfg, Runtime("cpu", "fp32"), 426, "/tmp/x", world_size=2)
    assert one["per_device_train_batch_size"] == 32 and "ddp_backend" not in one
    assert two["per_device_train_batch_size"] == 16 and two["ddp_backend"] == "gloo"
    assert two["ddp_find_unused_parameters"] is False and two["warmup_steps"] == one["warmup_steps"]
    assert two.get("average_tokens_across_devices", False) is False  # no x N loss scaling of a mean loss
    with pytest.raises(PipelineError, match="camembert.demo.batch_size = 32 is not a multiple of the 3 processes"):
        training_arguments(cfg, Runtime("cpu", "fp32"), 426, "/tmp/x", world_size=3)

"""Data-parallel training throughput of the two deep models on the CPU: 2 gloo processes against one.

What the ``launcher: torchrun`` knob buys on a CPU box (docs/distributed.md). Each configuration runs
in its own processes, as the stages do (torchrun for 2 processes; ``rakuten.runtime.distributed.init``:
gloo), with the library's own training code at params.yaml's demo sizes and the stages' semantics
(the global batch is the param's, each rank takes ``batch / N``):

* CamemBERT: the demo profile's scratch encoder (:func:`rakuten.models.camembert.encoder.build_model`,
  its BPE trained on the generated catalog's texts) trained by the stage's own Hugging Face ``Trainer``
  (:func:`rakuten.models.camembert.training.build_trainer`: under torchrun it runs DDP itself), for
  ``--warmup`` + ``--steps`` optimiser steps with no evaluation or checkpoint; the timed steps are
  those after the warm-up, between two barriers.
* ResNet: the demo profile's network (:func:`rakuten.models.resnet50.training.network`), wrapped by
  :func:`rakuten.models.resnet50.parallel.wrap_ddp` under torchrun, trained by the stage's
  :func:`rakuten.models.resnet50.training.train_step` (global weighted loss, one-cycle AdamW) on
  image tensors (compute, no JPEG decoding).

Configurations: 1 process x 2 threads, 1 x 1, and 2 gloo processes x 1 thread. Writes
``reports/bench/distributed.json``.

    python bench/distributed.py                        # ~2 min on 2 cores
    python bench/distributed.py --steps 1 --warmup 1 --out /tmp/d.json   # a quick check of the code
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import backbones as BB  # first: keeps the Hugging Face hub offline before transformers loads
import torch
from transformers import TrainerCallback

from rakuten.contracts.classes import N_CLASSES
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.models.camembert.config import CamembertConfig
from rakuten.models.camembert.data import EncodedTexts, encode
from rakuten.models.camembert.encoder import build_model
from rakuten.models.camembert.trainer_setup import checkpoint_dir
from rakuten.models.camembert.training import build_trainer
from rakuten.models.resnet50.config import ResnetConfig
from rakuten.models.resnet50.inference import memory_format
from rakuten.models.resnet50.parallel import wrap_ddp
from rakuten.models.resnet50.training import StepParts, network, optimiser, train_step
from rakuten.runtime import distributed as D
from rakuten.runtime.torch_setup import Runtime, choose_runtime, frame_labels, seed_everything, set_threads

log = logging.getLogger("bench.distributed")
REPO = Path(__file__).resolve().parents[1]
#: the measured models: params.yaml's demo profiles (their global batch sizes)
MODELS = {"camembert": CamembertConfig().demo, "resnet": ResnetConfig().demo}
#: arguments the benchmark gives the stage's Trainer instead of the run's: a fixed number of steps, nothing else
BENCH_ARGS = {"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False, "logging_strategy": "no"}


def describe(model: str) -> str:
    demo = MODELS[model]
    if model == "camembert":
        return f"camembert demo {demo.scratch.num_layers}x{demo.scratch.hidden_size}, {demo.max_length} tokens"
    return f"{demo.arch} {demo.image_size} px"


# ------------------------------------------------------------------------------------- worker


def _sync(runtime: Runtime) -> None:
    if runtime.device == "cuda":
        torch.cuda.synchronize()
    D.barrier()


class StepClock(TrainerCallback):
    """Wall time of the Trainer's optimiser steps after the first ``warmup`` ones (every rank waits for all)."""

    def __init__(self, runtime: Runtime, warmup: int):
        self.runtime, self.warmup, self.start, self.end = runtime, warmup, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            _sync(self.runtime)
            self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        _sync(self.runtime)
        self.end = time.perf_counter()


def camembert_wall(runtime: Runtime, here: D.World, threads: int, steps: int, warmup: int) -> float:
    """Seconds of ``steps`` optimiser steps of the stage's Trainer (DDP under torchrun), after ``warmup``."""
    cfg = CamembertConfig(device=runtime.device, num_threads=threads, seed=0)
    frame = BB.catalog_frame(max(2000, (warmup + steps) * cfg.batch_size))
    texts = frame["text_light"].tolist()
    tokenizer, net = build_model(cfg, texts)  # the BPE is deterministic: the same on every rank
    data = EncodedTexts(encode(tokenizer, texts, cfg.max_length), frame_labels(frame))
    clock = StepClock(runtime, warmup)
    with checkpoint_dir(here) as out_dir:  # one folder for all ranks, removed afterwards
        args = {**BENCH_ARGS, "max_steps": warmup + steps}
        trainer = build_trainer(cfg, runtime, net, tokenizer, (data, data), out_dir, here, overrides=args)
        trainer.add_callback(clock)
        set_threads(threads)  # accelerate may set its own thread count for CPU ranks
        trainer.train()
    return clock.end - clock.start


def resnet_wall(runtime: Runtime, here: D.World, per_rank: int, steps: int, warmup: int) -> float:
    """Seconds of ``steps`` of the stage's ``train_step`` (DDP under torchrun) on image tensors, after ``warmup``."""
    cfg = ResnetConfig(device=runtime.device, seed=0)
    net, _ = network(cfg, runtime)
    train_net = wrap_ddp(net, runtime, here) if here.distributed else net  # the library's wrapping
    optimizer, scheduler, scaler = optimiser(net, cfg, runtime, warmup + steps)
    parts = StepParts(train_net, optimizer, scheduler, scaler, runtime, memory_format(cfg, runtime), here)
    gen = torch.Generator().manual_seed(here.rank)
    size = cfg.image_size
    for i in range(warmup + steps):
        if i == warmup:
            _sync(runtime)
            start = time.perf_counter()
        x = torch.randn(per_rank, 3, size, size, generator=gen)
        train_step(parts, x, torch.randint(0, N_CLASSES, (per_rank,), generator=gen), torch.ones(per_rank))
    _sync(runtime)
    return time.perf_counter() - start


def worker(model: str, threads: int, steps: int, warmup: int) -> dict:
    """Time ``steps`` training steps of one model in this process (a torchrun rank or the only one)."""
    runtime = choose_runtime("cpu", "auto")
    here = D.init(runtime.device)
    set_threads(threads)
    seed_everything(0)
    global_batch = MODELS[model].batch_size
    per_rank = D.per_rank_batch(global_batch, here.size, f"{model} batch_size")
    if model == "camembert":
        wall = camembert_wall(runtime, here, threads, steps, warmup)
    else:
        wall = resnet_wall(runtime, here, per_rank, steps, warmup)
    return {
        "model": model,
        "size": "demo",
        "config": describe(model),
        "device": runtime.device,
        "precision": runtime.precision,
        "processes": here.size,
        "threads_per_process": threads,
        "global_batch": global_batch,
        "batch_per_process": per_rank,
        "timed_steps": steps,
        "train_samples_per_s": round(global_batch * steps / wall, 2),
        "step_s": round(wall / steps, 4),
    }


# ------------------------------------------------------------------------------------- driver


def run_config(model: str, processes: int, threads: int, steps: int, warmup: int) -> dict:
    """One measurement in fresh processes (torchrun when ``processes`` > 1); rank 0's JSON result."""
    script = str(Path(__file__).resolve())
    args = ["--worker", "--model", model, "--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    argv = D.launch_command(script, processes, args) if processes > 1 else [sys.executable, script, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    log.info("%s: %d process(es) x %d thread(s), global batch %d", model, processes, threads, MODELS[model].batch_size)
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)}: failed (exit {done.returncode})")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def efficiency(one: dict, many: dict, n: int) -> float:
    """Scaling efficiency: samples/s with ``n`` processes / (``n`` x samples/s with one process)."""
    return round(many["train_samples_per_s"] / (n * one["train_samples_per_s"]), 3)


def cpu_report(steps: int, warmup: int, models: list[str]) -> dict:
    """1 process x 2 threads, 1 x 1 and 2 gloo processes x 1 thread, demo sizes, global batch fixed."""
    out: dict = {}
    for model in models:
        runs = {
            name: run_config(model, p, t, steps, warmup) for name, p, t in (("1x2", 1, 2), ("1x1", 1, 1), ("2x1", 2, 1))
        }
        out[model] = {
            "config": describe(model),
            "global_batch": MODELS[model].batch_size,
            **{f"samples_per_s_{k}": v["train_samples_per_s"] for k, v in runs.items()},
            "speedup_2x1_over_1x2": round(runs["2x1"]["train_samples_per_s"] / runs["1x2"]["train_samples_per_s"], 3),
            "efficiency_2x1_vs_2_x_1x1": efficiency(runs["1x1"], runs["2x1"], 2),
            "runs": runs,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="camembert", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--models", default="camembert,resnet", help="comma-separated: camembert, resnet")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--out", default="reports/bench/distributed.json", help="JSON written here")
    args = parser.parse_args()
    if args.worker:
        result = worker(args.model, args.threads, args.steps, args.warmup)
        if D.is_main():
            print(json.dumps(result), flush=True)
        return
    setup_logging()
    models = [m for m in args.models.split(",") if m]
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu_report(args.steps, args.warmup, models),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    write_json(report, args.out)
    for model, r in report["cpu"].items():
        log.info(
            "%s (%s, global batch %d): 1x2 threads %.1f, 1x1 %.1f, 2 gloo x 1 thread %.1f samples/s; "
            "speed-up over 1x2 %.2fx, efficiency vs 2 x (1x1) %.2f",
            model,
            r["config"],
            r["global_batch"],
            r["samples_per_s_1x2"],
            r["samples_per_s_1x1"],
            r["samples_per_s_2x1"],
            r["speedup_2x1_over_1x2"],
            r["efficiency_2x1_vs_2_x_1x1"],
        )
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()

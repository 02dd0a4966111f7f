"""Data-parallel training throughput of the two deep models: N torchrun processes against one.

What the ``launcher: torchrun`` knob buys (docs/distributed.md). Each configuration runs in its own
processes, as the stages do: a worker builds the model, wraps it in DDP over the torchrun group
(``rakuten.runtime.distributed.init``: gloo on CPU, NCCL with ``cuda:LOCAL_RANK`` on GPUs; ResNet through
the library's own ``_ddp``, SyncBatchNorm on GPUs), runs warm-up steps, then times ``--steps``
training steps (AdamW, between two barriers) on synthetic batches: texts with the generated
catalog's token-length mix (dynamic padding), images as tensors (compute, no JPEG decoding).

* CPU (default, this machine): 1 process x 2 threads against 2 gloo processes x 1 thread, the
  demo sizes (CamemBERT 2 x 128, 64 tokens, batch 32; ResNet18 32 px, batch 64), with the stages'
  semantics: the global batch is the param's, each rank takes batch / N (``--scaling strong``).
  Writes ``reports/bench/distributed.json``.
* GPU (``--device cuda``, run by ``bench/gpu_check.sh`` on a machine with N > 1 GPUs): the full sizes
  (camembert-base 12 x 768, up to 256 tokens, 16 rows per GPU; ResNet50 224 px channels-last, 64
  per GPU; bf16), 1 GPU against all N with the per-GPU batch fixed (``--scaling weak``: how one
  scales out), scaling efficiency = samples/s(N) / (N x samples/s(1)), merged into
  ``reports/bench/gpu.json`` under ``multi_gpu`` (``"skipped": "1 GPU"`` with one GPU).

    python bench/distributed.py                        # CPU: ~2 min on 2 cores
    python bench/distributed.py --device cuda --processes 0 --merge-into reports/bench/gpu.json
    python bench/distributed.py --processes 2 --steps 1 --merge-into /tmp/smoke.json   # that step on the CPU
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

import numpy as np
import torch

import rakuten  # noqa: F401 - first: the numeric pins of rakuten.core.numerics apply before torch loads
from rakuten.contracts.classes import N_CLASSES
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.runtime import distributed as D
from rakuten.runtime.torch_setup import Runtime, choose_runtime, seed_everything, set_threads

log = logging.getLogger("bench.distributed")
REPO = Path(__file__).resolve().parents[1]
#: model sizes: (text hidden, layers, heads, ffn, vocab, max tokens, text batch, image arch, px, image batch)
SIZES = {
    "demo": {
        "text": dict(
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=512,
            vocab_size=8000,
            max_length=64,
            batch=32,
            label="camembert demo 2x128, 64 tokens",
        ),
        "image": dict(arch="resnet18", size=32, batch=64, label="resnet18 32 px"),
    },
    "full": {
        "text": dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            vocab_size=32005,
            max_length=256,
            batch=16,
            label="camembert-base 12x768, <= 256 tokens",
        ),
        "image": dict(arch="resnet50", size=224, batch=64, label="resnet50 224 px"),
    },
}


# ------------------------------------------------------------------------------------- worker


def _text_batches(spec: dict, batch: int, n: int, seed: int) -> list[dict]:
    """``n`` padded batches whose lengths follow the catalog's mix (lognormal, mean ~28 tokens, capped)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lengths = np.clip(rng.lognormal(3.2, 0.5, batch).astype(int) + 2, 4, spec["max_length"])
        width = int(lengths.max())
        ids = torch.from_numpy(rng.integers(5, spec["vocab_size"], (batch, width)))
        mask = torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))
        ids = torch.where(mask.bool(), ids, torch.ones_like(ids))  # <pad> = 1
        out.append(
            {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(rng.integers(0, N_CLASSES, batch))}
        )
    return out


def _image_batches(spec: dict, batch: int, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, 3, spec["size"], spec["size"], generator=gen),
            torch.randint(0, N_CLASSES, (batch,), generator=gen),
        )
        for _ in range(n)
    ]


def _ddp(module: torch.nn.Module, runtime: Runtime, here: D.World) -> torch.nn.Module:
    if not here.distributed:
        return module
    ids = [here.local_rank] if runtime.device == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)


def worker(model: str, size: str, device: str, threads: int, global_batch: int, steps: int, warmup: int) -> dict:
    """Time ``steps`` DDP training steps of one model in this process (a torchrun rank or the only one)."""
    from rakuten.models import resnet50 as R

    runtime = choose_runtime(device, "auto")
    here = D.init(runtime.device)
    set_threads(threads)
    seed_everything(0)
    per_rank = D.per_rank_batch(global_batch, here.size, "--batch")
    dev = torch.device("cuda", here.local_rank) if runtime.device == "cuda" else torch.device("cpu")
    spec = SIZES[size]["text" if model == "camembert" else "image"]
    n = warmup + steps
    if model == "camembert":
        from transformers import AutoConfig, AutoModelForSequenceClassification

        cfg = AutoConfig.for_model(
            "camembert",
            num_labels=N_CLASSES,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
            max_position_embeddings=spec["max_length"] + 2,
            **{
                k: spec[k]
                for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
            },
        )
        net = AutoModelForSequenceClassification.from_config(cfg).to(dev).train()
        train_net = _ddp(net, runtime, here)
        batches = _text_batches(spec, per_rank, n, seed=here.rank)

        def forward(batch):
            return train_net(**{k: v.to(dev, non_blocking=True) for k, v in batch.items()}).loss
    else:
        net = R.make_net(spec["arch"], spec["size"]).to(dev)
        fmt = torch.channels_last if runtime.device == "cuda" else torch.contiguous_format
        net = net.to(memory_format=fmt).train()
        train_net = R._ddp(net, runtime, here) if here.distributed else net  # the library's wrapping (SyncBN on GPU)
        batches = _image_batches(spec, per_rank, n, seed=here.rank)

        def forward(batch):
            x, y = batch
            x = x.to(dev, non_blocking=True).contiguous(memory_format=fmt)
            return torch.nn.functional.cross_entropy(train_net(x).float(), y.to(dev))

    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def sync() -> None:
        if runtime.device == "cuda":
            torch.cuda.synchronize()
        D.barrier()

    for i, batch in enumerate(batches):
        if i == warmup:
            sync()
            start = time.perf_counter()
        with torch.autocast(runtime.device, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None):
            loss = forward(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    wall = time.perf_counter() - start
    rows = per_rank * steps * here.size
    return {
        "model": model,
        "size": size,
        "config": spec["label"],
        "device": runtime.device,
        "precision": runtime.precision,
        "processes": here.size,
        "threads_per_process": threads,
        "global_batch": global_batch,
        "batch_per_process": per_rank,
        "timed_steps": steps,
        "train_samples_per_s": round(rows / wall, 2),
        "step_s": round(wall / steps, 4),
    }


# ------------------------------------------------------------------------------------- driver


def run_config(
    model: str, size: str, device: str, processes: int, threads: int, batch: int, steps: int, warmup: int
) -> dict:
    """One measurement in fresh processes (torchrun when ``processes`` > 1); rank 0's JSON result."""
    args = [
        str(Path(__file__).resolve()),
        "--worker",
        "--model",
        model,
        "--size",
        size,
        "--device",
        device,
        "--threads",
        str(threads),
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
    ]
    argv = D.launch_command(args[0], processes, args[1:]) if processes > 1 else [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    log.info("%s %s: %d process(es) x %d thread(s), global batch %d", model, size, processes, threads, batch)
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)}: failed (exit {done.returncode})")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def efficiency(one: dict, many: dict, n: int) -> float:
    """Scaling efficiency: samples/s with ``n`` processes / (``n`` x samples/s with one process)."""
    return round(many["train_samples_per_s"] / (n * one["train_samples_per_s"]), 3)


def cpu_report(steps: int, warmup: int, models: list[str]) -> dict:
    """CPU: 1 process x 2 threads, 1 x 1 and 2 gloo processes x 1 thread, demo sizes, global batch fixed."""
    out: dict = {}
    for model in models:
        spec = SIZES["demo"]["text" if model == "camembert" else "image"]
        runs = {
            name: run_config(model, "demo", "cpu", p, t, spec["batch"], steps, warmup)
            for name, p, t in (("1x2", 1, 2), ("1x1", 1, 1), ("2x1", 2, 1))
        }
        out[model] = {
            "config": spec["label"],
            "global_batch": spec["batch"],
            **{f"samples_per_s_{k}": v["train_samples_per_s"] for k, v in runs.items()},
            "speedup_2x1_over_1x2": round(runs["2x1"]["train_samples_per_s"] / runs["1x2"]["train_samples_per_s"], 3),
            "efficiency_2x1_vs_2_x_1x1": efficiency(runs["1x1"], runs["2x1"], 2),
            "runs": runs,
        }
    return out


def gpu_report(processes: int, steps: int, warmup: int, scaling: str, models: list[str], device: str = "cuda") -> dict:
    """GPU: one GPU against all ``processes`` GPUs, full sizes; per-GPU batch fixed unless ``scaling`` is strong.

    ``device="cpu"``: the same step at the demo sizes over gloo (a smoke run of gpu_check.sh's step).
    """
    if processes <= 1:
        return {"skipped": f"{max(processes, 1)} GPU"}
    size = "full" if device == "cuda" else "demo"
    out: dict = {"gpus": processes, "scaling": scaling, "device": device}
    for model in models:
        spec = SIZES[size]["text" if model == "camembert" else "image"]
        one = run_config(model, size, device, 1, 1, spec["batch"], steps, warmup)
        batch = spec["batch"] * processes if scaling == "weak" else spec["batch"]
        many = run_config(model, size, device, processes, 1, batch, steps, warmup)
        out[model] = {
            "config": spec["label"],
            "samples_per_s_1_gpu": one["train_samples_per_s"],
            f"samples_per_s_{processes}_gpus": many["train_samples_per_s"],
            "scaling_efficiency": efficiency(one, many, processes),
            "runs": [one, many],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="camembert", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="demo", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--models", default="camembert,resnet", help="comma-separated: camembert, resnet")
    parser.add_argument("--processes", type=int, default=0, help="GPU: processes (0 = one per visible GPU)")
    parser.add_argument(
        "--scaling",
        default="weak",
        choices=("weak", "strong"),
        help="GPU: weak = per-GPU batch fixed; strong = global batch fixed (the stages' semantics)",
    )
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: CPU 8, GPU 30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--out", default="reports/bench/distributed.json", help="CPU: JSON written here")
    parser.add_argument("--merge-into", default="", help="GPU: JSON file that gets a multi_gpu key (gpu_check.sh)")
    args = parser.parse_args()
    if args.worker:
        result = worker(args.model, args.size, args.device, args.threads, args.batch, args.steps, args.warmup)
        if D.is_main():
            print(json.dumps(result), flush=True)
        return
    setup_logging()
    models = [m for m in args.models.split(",") if m]
    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    if args.device == "cpu" and not args.merge_into:
        report = {**meta, "cpu": cpu_report(args.steps or 8, args.warmup, models)}
        report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
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
        return
    gpus = D.visible_gpus()
    processes = min(args.processes or gpus, gpus)  # nvidia-smi lists GPUs that CUDA_VISIBLE_DEVICES may hide
    if args.device == "cpu":  # smoke run of the multi-GPU step: gloo processes on the CPU
        processes = args.processes or 2
    report = gpu_report(processes, args.steps or 30, args.warmup, args.scaling, models, args.device)
    for model in models:
        if model in report:
            log.info(
                "%s: %.1f samples/s with 1 process (GPU), %.1f with %d; scaling efficiency %.3f",
                model,
                report[model]["samples_per_s_1_gpu"],
                report[model][f"samples_per_s_{processes}_gpus"],
                processes,
                report[model]["scaling_efficiency"],
            )
    if "skipped" in report:
        log.info("multi-GPU step skipped: %s", report["skipped"])
    target = Path(args.merge_into or args.out)
    merged = json.loads(target.read_text()) if args.merge_into and target.is_file() else {}
    merged["multi_gpu"] = {**meta, **report}
    write_json(merged, target)
    log.info("wrote %s (multi_gpu)", target)


if __name__ == "__main__":
    main()

"""Benchmark of the deep models' library code: training and inference samples/s per model and profile, peak memory.

Every figure is the stage's own code at work. ResNet: :func:`~rakuten.models.resnet50.training.train_rows`
(usable rows, weights, rebalancing), :func:`~rakuten.models.resnet50.training.network` (backbone
factory), :func:`~rakuten.models.resnet50.training.train_datasets` (JPEG decode + augmentations, or the
decode-once cache with ``cache_images``), the sampler, loader, optimiser and
:func:`~rakuten.models.resnet50.training.train_step`. CamemBERT:
:func:`~rakuten.models.camembert.encoder.build_model`, the pipeline's tokenisation, and the stage's
Hugging Face ``Trainer`` (:func:`~rakuten.models.camembert.training.build_trainer`: its length-grouped
loader and collator, its loss, its AdamW). Inference: each model's ``predict_proba``.

CPU mode (default) reads the default sample's stage files (data/processed/) and measures the demo and
full profiles; with ``--stage-times`` it also times the demo stages exactly as `dvc repro` runs them.
GPU mode (``--gpu``, run by bench/gpu_check.sh) measures the full profiles on a generated catalog on one
CUDA GPU, then trains and predicts with the library's own ``train`` / ``predict_proba`` on
``--smoke-rows`` rows. ``--cpu-smoke`` runs GPU mode's code on the CPU at tiny sizes (tests/bench).
Prints a table and writes JSON.

    python bench/deep.py                         # CPU: demo + full profiles, a few steps each
    python bench/deep.py --stage-times           # + wall time of `python stages/camembert.py` / resnet50.py
    python bench/deep.py --gpu                   # see bench/gpu_check.sh
    python bench/deep.py --cpu-smoke --out /tmp/smoke.json   # GPU mode's code on the CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import backbones as BB  # first: keeps the Hugging Face hub offline before transformers loads
import numpy as np
import pandas as pd
import torch

from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.core.params import load_params
from rakuten.models.camembert import model as C
from rakuten.models.camembert.config import SCRATCH, ScratchArchitecture
from rakuten.models.camembert.data import EncodedTexts, encode, frame_texts
from rakuten.models.camembert.encoder import build_model
from rakuten.models.camembert.training import build_trainer
from rakuten.models.resnet50 import model as R
from rakuten.models.resnet50.data import make_loader
from rakuten.models.resnet50.frame import QUALITY_COLUMNS
from rakuten.models.resnet50.inference import memory_format
from rakuten.models.resnet50.parallel import train_sampler
from rakuten.models.resnet50.training import StepParts, network, optimiser, train_datasets, train_rows, train_step
from rakuten.runtime.distributed import World
from rakuten.runtime.torch_setup import Runtime, choose_runtime, frame_labels, seed_everything, set_threads

log = logging.getLogger("bench.deep")
REPO = Path(__file__).resolve().parents[1]
#: the full profile's architecture when camembert-base's weights are not on this machine (random init)
BASE = ScratchArchitecture(vocab_size=32005, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)


# ------------------------------------------------------------------------------------- timing


class Clock:
    """Wall time that waits for queued CUDA work, so GPU figures are real."""

    def __init__(self, runtime: Runtime):
        self.cuda = runtime.device == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def peak_memory_mib(runtime: Runtime) -> dict:
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if runtime.device == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def reset_peak(runtime: Runtime) -> None:
    if runtime.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def train_loop(
    step, batches, n_rows: int, batch_size: int, max_steps: int, budget_s: float, clock: Clock, warmup: int = 2
) -> dict:
    """Run ``step(batch) -> n`` over ``batches`` (one epoch at most); samples/s after ``warmup`` steps."""
    steps, seen, start, t0 = 0, 0, clock.now(), None
    for batch in batches:
        if steps == warmup:
            t0, seen = clock.now(), 0
        seen += step(batch)
        steps += 1
        if (max_steps and steps >= max_steps) or clock.now() - start > budget_s:
            break
    end = clock.now()
    if t0 is None:  # fewer steps than warmup: time them all
        t0 = start
    rate = seen / max(end - t0, 1e-9)
    epoch_steps = -(-n_rows // batch_size)
    return {
        "train_steps": steps,
        "epoch_steps": epoch_steps,
        "full_epoch": steps >= epoch_steps,
        "train_samples_per_s": round(rate, 1),
        "train_wall_s": round(end - start, 1),
        "epoch_s_estimate": round(n_rows / rate, 1),
    }


def infer_rate(module, fitted, rows: pd.DataFrame, clock: Clock) -> float:
    """Rows per second of ``module.predict_proba`` (the library's inference) on ``rows``."""
    t = clock.now()
    module.predict_proba(fitted, rows)
    return round(len(rows) / max(clock.now() - t, 1e-9), 1)


# --------------------------------------------------------------------------------- the models


def bench_camembert(frame: pd.DataFrame, cfg, runtime: Runtime, max_steps: int, budget_s: float, n_infer: int) -> dict:
    """The stage's Trainer steps (its loader, collator, loss and AdamW; same batch/length/precision) + inference."""
    seed_everything(cfg.seed)
    reset_peak(runtime)
    texts, labels = frame_texts(frame, cfg.text_column), frame_labels(frame)
    tok_start = time.perf_counter()
    tokenizer, model = build_model(cfg, texts[:20000])
    data = EncodedTexts(encode(tokenizer, texts, cfg.max_length), labels)
    prep_s = time.perf_counter() - tok_start
    model.to(runtime.device)
    with tempfile.TemporaryDirectory(prefix="bench-deep-") as out_dir:
        trainer = build_trainer(cfg, runtime, model, tokenizer, (data, data), out_dir)
        trainer.create_optimizer()
        step = BB.text_step(trainer, runtime)

        def counted(batch) -> int:
            step(batch)
            return int(batch["input_ids"].shape[0])

        clock = Clock(runtime)
        loader = trainer.get_train_dataloader()
        result = train_loop(counted, loader, len(texts), cfg.batch_size, max_steps, budget_s, clock)
    fitted = C.CamembertModel(model=model.eval(), tokenizer=tokenizer, config=cfg)
    result["infer_samples_per_s"] = infer_rate(C, fitted, frame.iloc[:n_infer], clock)
    result["tokenize_and_build_s"] = round(prep_s, 1)
    result["params_m"] = BB.params_m(model)
    return {**result, **peak_memory_mib(runtime)}


def bench_resnet(frame: pd.DataFrame, cfg, runtime: Runtime, max_steps: int, budget_s: float, n_infer: int) -> dict:
    """The stage's training steps through its data path (usable rows and weights, JPEG decode + augmentations
    in DataLoader workers or the decode-once cache, sampler, loader) + inference."""
    seed_everything(cfg.seed)
    reset_peak(runtime)
    try:
        weights, init = R.resolve_weights(cfg), cfg.weights
    except PipelineError:
        weights, init = None, "random (weights not on this machine)"
    rows = train_rows(frame, cfg)
    net, norm = network(cfg, runtime, weights)
    train_ds, _ = train_datasets(cfg, norm, rows, frame.iloc[:1])
    sampler = train_sampler(train_ds, rows.draw_weights, cfg, World())
    loader = make_loader(train_ds, cfg.batch_size, cfg, runtime, shuffle=True, sampler=sampler)
    optimizer, scheduler, scaler = optimiser(net, cfg, runtime, len(loader))
    parts = StepParts(net, optimizer, scheduler, scaler, runtime, memory_format(cfg, runtime))

    def step(batch) -> int:
        train_step(parts, *batch)
        return int(batch[0].shape[0])

    clock = Clock(runtime)
    result = train_loop(step, loader, len(rows.frame), cfg.batch_size, max_steps, budget_s, clock)
    result["infer_samples_per_s"] = infer_rate(
        R, R.ResnetModel(net=net.eval(), config=cfg), frame.iloc[:n_infer], clock
    )
    result["init"] = init
    result["params_m"] = BB.params_m(net)
    return {**result, **peak_memory_mib(runtime)}


# -------------------------------------------------------------------------------------- data


def stage_frame() -> pd.DataFrame:
    """Train rows of the default sample with both the text and the image columns (from data/processed)."""
    from rakuten.models.runner import load_text_frame

    text = load_text_frame()
    images = R.load_image_frame()
    frame = text.merge(images[["row_id", *QUALITY_COLUMNS[1:]]], on="row_id")
    return frame[frame["split"] == "train"].reset_index(drop=True)


# ------------------------------------------------------------------------------------ profiles


def profile_configs(params: dict, gpu: bool, profiles: tuple[str, ...] | None = None) -> list[tuple[str, str, object]]:
    """(model, profile, config) to benchmark. Full CamemBERT without weights = base-size config, random init."""
    out = []
    for profile in profiles or (["full"] if gpu else ["demo", "full"]):
        ccfg = parse_section(C.CamembertConfig, {**params["camembert"], "profile": profile}, "camembert")
        if ccfg.model != SCRATCH:
            try:
                C.resolve_weights(ccfg)
            except PipelineError:
                ccfg = ccfg.with_active(model=SCRATCH, scratch=BASE)  # same architecture, random init
        out.append(("camembert", profile, ccfg))
        rcfg = parse_section(R.ResnetConfig, {**params["resnet50"], "profile": profile}, "resnet50")
        out.append(("resnet50", profile, replace(rcfg, num_workers=rcfg.num_workers if not gpu else 0)))
    return out


def label(name: str, cfg) -> str:
    """A config's short description in the table: encoder shape and length, or backbone and input size."""
    if name == "camembert":
        shape = f"{cfg.scratch.num_layers}x{cfg.scratch.hidden_size}" if cfg.model == SCRATCH else cfg.model
        return f"{shape}, len {cfg.max_length}"
    return f"{cfg.arch} {cfg.image_size}px"


def stage_times() -> dict:
    """Wall time of each demo stage script, run as `dvc repro` runs it (writes the usual outputs)."""
    out = {}
    for stage in ("camembert", "resnet50"):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=REPO, capture_output=True, text=True
        )
        out[stage] = {"wall_s": round(time.perf_counter() - start, 1), "returncode": done.returncode}
        if done.returncode:
            log.warning("stage %s failed: %s", stage, done.stderr.strip().splitlines()[-1:])
    return out


def train_check(frame: pd.DataFrame, configs: list, rows: int, device: str) -> dict:
    """The library's own ``train`` + ``predict_proba`` (Trainer, early stopping...) on ``rows`` rows, 1 epoch."""
    out = {}
    part = frame.iloc[:rows]
    train, val = part.iloc[: int(rows * 0.8)], part.iloc[int(rows * 0.8) :]
    for name, _, cfg in configs:
        module = C if name == "camembert" else R
        if name == "resnet50":
            try:
                R.resolve_weights(cfg)
            except PipelineError:
                cfg = cfg.with_active(weights="none")  # no ImageNet file on this machine: random init
        start = time.perf_counter()
        model = module.train(train, val, replace(cfg.with_active(epochs=1), device=device))
        proba = module.predict_proba(model, val)
        out[name] = {
            "rows": rows,
            "wall_s": round(time.perf_counter() - start, 1),
            "proba_rows_sum_to_1": bool(np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)),
            "val_weighted_f1": model.history[-1]["weighted_f1"] if model.history else None,
        }
    return out


def _error(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


def measure(frame: pd.DataFrame, configs: list, runtime: Runtime, steps: int, budget: float, n_infer: int) -> list:
    """One table row per (model, profile): the library's training steps and inference (a failure is recorded)."""
    results = []
    for name, profile, cfg in configs:
        log.info("benchmarking %s (%s profile)", name, profile)
        fn = bench_camembert if name == "camembert" else bench_resnet
        try:
            res = fn(frame, cfg, runtime, steps, budget, n_infer)
        except Exception as exc:  # noqa: BLE001 - one model failing must not lose the other's figures
            log.exception("%s (%s) failed", name, profile)
            res = {"error": _error(exc)}
        results.append(
            {"model": name, "profile": profile, "config": label(name, cfg), "batch_size": cfg.batch_size, **res}
        )
    return results


# ---------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="GPU mode: full profiles on a generated catalog, CUDA")
    parser.add_argument("--cpu-smoke", action="store_true", help="GPU mode's code on the CPU at tiny sizes")
    parser.add_argument("--rows", type=int, default=12000, help="GPU mode: generated catalog rows (with JPEGs)")
    parser.add_argument("--image-size", type=int, default=500, help="GPU mode: generated JPEG side (real: 500)")
    parser.add_argument("--jobs", type=int, default=16, help="GPU mode: processes generating the catalog")
    parser.add_argument("--workers", type=int, default=8, help="GPU mode: DataLoader workers (JPEG decoding)")
    parser.add_argument("--steps", type=int, default=0, help="max timed steps per model (0: CPU 8, GPU the budget)")
    parser.add_argument("--budget", type=float, default=0, help="timed seconds per model (0: CPU 120, GPU 110)")
    parser.add_argument("--infer", type=int, default=0, help="rows for inference timing (0: CPU 256, GPU 4096)")
    parser.add_argument("--smoke-rows", type=int, default=2000, help="GPU mode: rows of the library train check")
    parser.add_argument("--profiles", default="demo,full", help="CPU mode: which profiles to measure")
    parser.add_argument("--stage-times", action="store_true", help="CPU mode: also time the demo stage scripts")
    parser.add_argument("--out", default=None, help="JSON path (default reports/bench/deep.json or gpu.json)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    setup_logging()
    params = load_params(REPO / "params.yaml")
    gpu = args.gpu or args.cpu_smoke
    runtime = choose_runtime("cpu" if args.cpu_smoke or not gpu else "cuda", "auto")
    if args.cpu_smoke:
        threads = set_threads(1)  # tiny models: one thread (two fight other processes on a shared box)
    elif runtime.device == "cuda":
        threads = set_threads(0)
    else:
        threads = set_threads(parse_section(C.CamembertConfig, params["camembert"], "camembert").num_threads)
    report = {
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu" if gpu else "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if runtime.device == "cuda" else platform.processor() or "cpu",
        "cpu_threads": threads,
        "precision": runtime.precision,
        "results": [],
    }
    if gpu:
        gpu_main(args, params, runtime, report)
    else:
        cpu_main(args, params, runtime, report)


def gpu_main(args, params: dict, runtime: Runtime, report: dict) -> None:
    """Full profiles on a generated catalog (smoke: demo profiles, tiny batches), then the library train check."""
    smoke = args.cpu_smoke
    out = args.out or (str(Path(tempfile.gettempdir()) / "gpu_cpu_smoke.json") if smoke else "reports/bench/gpu.json")
    rows, image_size = (60, 64) if smoke else (args.rows, args.image_size)
    configs = profile_configs(params, True, ("demo",) if smoke else ("full",))
    workers = 0 if smoke else args.workers
    configs = [
        (n, p, replace(c, num_workers=workers) if n == "resnet50" else c)
        for n, p, c in ((n, p, c.with_active(batch_size=4) if smoke else c) for n, p, c in configs)
    ]
    with tempfile.TemporaryDirectory(prefix="bench-deep-") as tmp:
        start = time.perf_counter()
        frame = BB.catalog_frame(rows, Path(tmp) / "catalog", image_size, n_jobs=1 if smoke else args.jobs)
        report["catalog"] = {
            "rows": len(frame),
            "image_size": image_size,
            "generate_s": round(time.perf_counter() - start, 1),
        }
        steps, budget = args.steps or (2 if smoke else 0), args.budget or (1.0 if smoke else 110.0)
        report["results"] = measure(frame, configs, runtime, steps, budget, args.infer or (16 if smoke else 4096))
        check_rows = 60 if smoke else args.smoke_rows
        if check_rows:
            try:
                report["library_train_check"] = train_check(frame, configs, check_rows, runtime.device)
            except Exception as exc:  # noqa: BLE001 - the throughput figures above stand
                log.exception("library train check failed")
                report["library_train_check"] = {"error": _error(exc)}
    print_table(report)
    write_json(report, out)
    log.info("wrote %s", out)


def cpu_main(args, params: dict, runtime: Runtime, report: dict) -> None:
    """Demo + full profiles of the library on the default sample's stage files."""
    frame = stage_frame()
    report["catalog"] = {"rows": len(frame), "source": "data/processed (default sample, train split)"}
    configs = [c for c in profile_configs(params, False) if c[1] in args.profiles.split(",")]
    report["results"] = measure(frame, configs, runtime, args.steps or 8, args.budget or 120.0, args.infer or 256)
    if args.stage_times:
        report["demo_stage_wall_s"] = stage_times()
    print_table(report)
    write_json(report, args.out or "reports/bench/deep.json")


def print_table(report: dict) -> None:
    cols = (
        "model",
        "profile",
        "config",
        "batch_size",
        "train_steps",
        "train_samples_per_s",
        "epoch_s_estimate",
        "infer_samples_per_s",
        "peak_rss_mib",
        "peak_gpu_mib",
    )
    rows = [
        [str(r.get(c, "")) if "error" not in r or c in cols[:3] else r["error"][:60] * (c == cols[3]) for c in cols]
        for r in report["results"]
    ]
    if not rows:
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print(
        f"device: {report['device']} ({report['mode']}, {report['precision']}, {report['cpu_threads']} threads), "
        f"catalog {report['catalog']}"
    )
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    for key in ("demo_stage_wall_s", "library_train_check"):
        if key in report:
            print(f"{key}: {report[key]}")


if __name__ == "__main__":
    main()

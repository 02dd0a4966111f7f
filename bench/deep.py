"""Benchmark of the deep models: training and inference samples/s per model and profile, peak memory.

CPU mode (default) uses the default sample's stage files (data/processed/) and, with
``--stage-times``, also times the demo stages exactly as `dvc repro` runs them. GPU mode (``--gpu``,
run by bench/gpu_check.sh) generates a catalog of ``--rows`` rows (85k = the real size) and trains
one epoch of each full-profile architecture (CamemBERT-base size, ResNet50 at 224 px; random init
where no pretrained weights are on disk), then runs the library's own ``train`` on a small subset
to check the CUDA code path end to end. Prints a table and writes JSON.

    python bench/deep.py                         # CPU: demo + full profiles, a few steps each
    python bench/deep.py --stage-times           # + wall time of `python stages/camembert.py` / resnet50.py
    python bench/deep.py --gpu --rows 85000      # see bench/gpu_check.sh
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

import numpy as np
import pandas as pd
import torch

from rakuten.config import parse_section
from rakuten.errors import PipelineError
from rakuten.io import write_json
from rakuten.logs import setup_logging
from rakuten.models import camembert as C
from rakuten.models import resnet as R
from rakuten.models.torch_utils import Runtime, choose_runtime, frame_labels, seed_everything, set_threads
from rakuten.params import load_params

log = logging.getLogger("bench.deep")
REPO = Path(__file__).resolve().parents[1]
BASE = C.ScratchArchitecture(vocab_size=32005, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)


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
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def reset_peak(runtime: Runtime) -> None:
    if runtime.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def train_loop(step, batches, n_rows: int, batch_size: int, max_steps: int, budget_s: float, clock: Clock,
               warmup: int = 2) -> dict:
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
    return {"train_steps": steps, "epoch_steps": epoch_steps, "full_epoch": steps >= epoch_steps,
            "train_samples_per_s": round(rate, 1), "train_wall_s": round(end - start, 1),
            "epoch_s_estimate": round(n_rows / rate, 1)}


# --------------------------------------------------------------------------------- the models

def bench_camembert(frame: pd.DataFrame, cfg: C.CamembertConfig, runtime: Runtime, max_steps: int,
                    budget_s: float, n_infer: int) -> dict:
    """Train steps (AdamW, the Trainer's optimiser, same batch/length/precision) + library inference."""
    from transformers import DataCollatorWithPadding

    seed_everything(cfg.seed)
    reset_peak(runtime)
    texts, labels = C.frame_texts(frame, cfg.text_column), frame_labels(frame)
    tok_start = time.perf_counter()
    tokenizer, model = C.build_model(cfg, texts[:20000])
    enc = C.encode(tokenizer, texts, cfg.max_length)
    prep_s = time.perf_counter() - tok_start
    model.to(runtime.device).train()
    loader = torch.utils.data.DataLoader(C.EncodedTexts(enc, labels), batch_size=cfg.batch_size, shuffle=True,
                                         collate_fn=DataCollatorWithPadding(tokenizer),
                                         generator=torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def step(batch) -> int:
        batch = {k: v.to(runtime.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(runtime.device, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None):
            loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return int(batch["input_ids"].shape[0])

    clock = Clock(runtime)
    result = train_loop(step, loader, len(texts), cfg.batch_size, max_steps, budget_s, clock)
    fitted = C.CamembertModel(model=model.eval(), tokenizer=tokenizer, config=cfg)
    rows = frame.iloc[:n_infer]
    t = clock.now()
    C.predict_proba(fitted, rows)
    result["infer_samples_per_s"] = round(len(rows) / max(clock.now() - t, 1e-9), 1)
    result["tokenize_and_build_s"] = round(prep_s, 1)
    result["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    return {**result, **peak_memory_mib(runtime)}


def bench_resnet(frame: pd.DataFrame, cfg: R.ResnetConfig, runtime: Runtime, max_steps: int,
                 budget_s: float, n_infer: int) -> dict:
    """Train steps through the real data path (JPEG decode + augmentations + DataLoader workers)."""
    seed_everything(cfg.seed)
    reset_peak(runtime)
    try:
        weights = R.resolve_weights(cfg)
        init = cfg.weights
    except PipelineError:
        weights, init = None, "random (weights not on this machine)"
    net = R.build_net(cfg.arch, weights).to(runtime.device)
    if runtime.device == "cuda":
        net = net.to(memory_format=torch.channels_last)
    labels = frame_labels(frame)
    ds = R.ImageRows(R.image_paths(frame), labels, np.ones(len(frame)), R.build_transform(cfg.image_size, cfg.augment),
                     cfg.image_size)
    loader = R._loader(ds, cfg.batch_size, cfg, runtime, shuffle=True)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.precision == "fp16")
    net.train()

    def step(batch) -> int:
        x, y, _ = batch
        x, y = x.to(runtime.device, non_blocking=True), y.to(runtime.device, non_blocking=True)
        if runtime.device == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(runtime.device, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return int(x.shape[0])

    clock = Clock(runtime)
    result = train_loop(step, loader, len(frame), cfg.batch_size, max_steps, budget_s, clock)
    fitted = R.ResnetModel(net=net.eval(), config=cfg)
    rows = frame.iloc[:n_infer]
    t = clock.now()
    R.predict_proba(fitted, rows)
    result["infer_samples_per_s"] = round(len(rows) / max(clock.now() - t, 1e-9), 1)
    result["init"] = init
    result["params_m"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 1)
    return {**result, **peak_memory_mib(runtime)}


# -------------------------------------------------------------------------------------- data

def stage_frame() -> pd.DataFrame:
    """Train rows of the default sample with both the text and the image columns (from data/processed)."""
    from rakuten.models.runner import load_text_frame

    text = load_text_frame()
    images = R.load_image_frame()
    frame = text.merge(images[["row_id", *R.QUALITY_COLUMNS[1:]]], on="row_id")
    return frame[frame["split"] == "train"].reset_index(drop=True)


def generated_frame(rows: int, image_size: int, n_jobs: int, out_dir: Path) -> pd.DataFrame:
    """A generated catalog of ``rows`` labelled rows (official layout, JPEGs at ``image_size``)."""
    from rakuten.data.catalog import load_catalog
    from rakuten.data.sample import SampleConfig, write_sample

    write_sample(SampleConfig(n_train=rows, n_test=0, image_size=image_size, n_jobs=n_jobs), out_dir)
    catalog, _ = load_catalog(out_dir)
    text = catalog["designation"].fillna("").astype(str) + " " + catalog["description"].fillna("").astype(str)
    return catalog.assign(
        text_light=text.str.replace(r"<[^>]+>", " ", regex=True).str.split().str.join(" "),
        clean_path=catalog["image_path"].astype(str), readable=True, keep_for_train=True, sample_weight=1.0,
        split="train")


# ------------------------------------------------------------------------------------ profiles

def profile_configs(params: dict, gpu: bool) -> list[tuple[str, str, object]]:
    """(model, profile, config) to benchmark. Full CamemBERT without weights = base-size config, random init."""
    out = []
    for profile in (["full"] if gpu else ["demo", "full"]):
        ccfg = parse_section(C.CamembertConfig, {**params["camembert"], "profile": profile}, "camembert")
        if ccfg.model != C.SCRATCH:
            try:
                C.resolve_weights(ccfg)
            except PipelineError:
                ccfg = ccfg.with_active(model=C.SCRATCH, scratch=BASE)  # same architecture, random init
        out.append(("camembert", profile, ccfg))
        rcfg = parse_section(R.ResnetConfig, {**params["resnet50"], "profile": profile}, "resnet50")
        out.append(("resnet50", profile, replace(rcfg, num_workers=rcfg.num_workers if not gpu else 0)))
    return out


def stage_times() -> dict:
    """Wall time of each demo stage script, run as `dvc repro` runs it (writes the usual outputs)."""
    out = {}
    for stage in ("camembert", "resnet50"):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=REPO,
                              capture_output=True, text=True)
        out[stage] = {"wall_s": round(time.perf_counter() - start, 1), "returncode": done.returncode}
        if done.returncode:
            log.warning("stage %s failed: %s", stage, done.stderr.strip().splitlines()[-1:])
    return out


def smoke_train_on_device(frame: pd.DataFrame, params: dict, rows: int, device: str) -> dict:
    """The library's own ``train`` + ``predict_proba`` (Trainer, early stopping...) on ``rows`` rows, 1 epoch."""
    out = {}
    part = frame.iloc[:rows]
    train, val = part.iloc[: int(rows * 0.8)], part.iloc[int(rows * 0.8):]
    configs = profile_configs(params, True)
    for name, module, cfg in (("camembert", C, configs[0][2]), ("resnet50", R, configs[1][2])):
        if name == "resnet50":
            try:
                R.resolve_weights(cfg)
            except PipelineError:
                cfg = cfg.with_active(weights="none")  # no ImageNet file on this machine: random init
        start = time.perf_counter()
        model = module.train(train, val, replace(cfg.with_active(epochs=1), device=device))
        proba = module.predict_proba(model, val)
        out[name] = {"rows": rows, "wall_s": round(time.perf_counter() - start, 1),
                     "proba_rows_sum_to_1": bool(np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)),
                     "val_weighted_f1": model.history[-1]["weighted_f1"] if model.history else None}
    return out


# ---------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="GPU mode: generated catalog, full profiles, one epoch")
    parser.add_argument("--rows", type=int, default=85000, help="GPU mode: generated catalog size")
    parser.add_argument("--image-size", type=int, default=224, help="GPU mode: generated JPEG size")
    parser.add_argument("--jobs", type=int, default=16, help="GPU mode: processes generating the catalog")
    parser.add_argument("--workers", type=int, default=8, help="GPU mode: DataLoader workers for ResNet")
    parser.add_argument("--steps", type=int, default=0, help="max train steps per model (0: CPU 8, GPU one epoch)")
    parser.add_argument("--budget", type=float, default=0, help="max train seconds per model (0: CPU 120, GPU 150)")
    parser.add_argument("--infer", type=int, default=0, help="rows for inference timing (0: CPU 256, GPU 8192)")
    parser.add_argument("--smoke-rows", type=int, default=2000, help="GPU mode: rows for the library train check")
    parser.add_argument("--device", default=None, choices=("cuda", "cpu"),
                        help="GPU mode on another device (cpu: a tiny dry run of gpu_check's code path)")
    parser.add_argument("--profiles", default="demo,full", help="CPU mode: which profiles to measure")
    parser.add_argument("--stage-times", action="store_true", help="CPU mode: also time the demo stage scripts")
    parser.add_argument("--out", default=None, help="JSON path (default reports/bench/deep.json or gpu.json)")
    args = parser.parse_args()
    setup_logging()
    params = load_params(REPO / "params.yaml")
    runtime = choose_runtime(args.device or ("cuda" if args.gpu else "cpu"), "auto")
    threads = set_threads(0 if runtime.device == "cuda" else
                          parse_section(C.CamembertConfig, params["camembert"], "camembert").num_threads)
    steps = args.steps or (0 if args.gpu else 8)
    budget = args.budget or (150.0 if args.gpu else 120.0)
    n_infer = args.infer or (8192 if args.gpu else 256)
    report = {"mode": "gpu" if args.gpu else "cpu", "python": platform.python_version(), "torch": torch.__version__,
              "device": (torch.cuda.get_device_name(0) if runtime.device == "cuda"
                         else platform.processor() or platform.machine()),
              "cpu_threads": threads, "precision": runtime.precision, "results": []}
    with tempfile.TemporaryDirectory(prefix="bench-deep-") as tmp:
        if args.gpu:
            start = time.perf_counter()
            frame = generated_frame(args.rows, args.image_size, args.jobs, Path(tmp) / "catalog")
            report["catalog"] = {"rows": len(frame), "image_size": args.image_size,
                                 "generate_s": round(time.perf_counter() - start, 1)}
        else:
            frame = stage_frame()
            report["catalog"] = {"rows": len(frame), "source": "data/processed (default sample, train split)"}
        for name, profile, cfg in profile_configs(params, args.gpu):
            if profile not in args.profiles.split(","):
                continue
            if name == "resnet50" and args.gpu:
                cfg = replace(cfg, num_workers=args.workers)
            log.info("benchmarking %s (%s profile)", name, profile)
            fn = bench_camembert if name == "camembert" else bench_resnet
            res = fn(frame, cfg, runtime, steps, budget, n_infer)
            if name == "camembert":
                shape = (f"{cfg.scratch.num_layers}x{cfg.scratch.hidden_size}" if cfg.model == C.SCRATCH
                         else cfg.model)
                label = f"{shape}, len {cfg.max_length}"
            else:
                label = f"{cfg.arch} {cfg.image_size}px"
            report["results"].append({"model": name, "profile": profile, "config": label,
                                      "batch_size": cfg.batch_size, **res})
        if args.gpu and args.smoke_rows:
            report["library_train_check"] = smoke_train_on_device(frame, params, args.smoke_rows, runtime.device)
    if args.stage_times and not args.gpu:
        report["demo_stage_wall_s"] = stage_times()
    print_table(report)
    write_json(report, args.out or f"reports/bench/{'gpu' if args.gpu else 'deep'}.json")


def print_table(report: dict) -> None:
    cols = ("model", "profile", "config", "batch_size", "train_steps", "train_samples_per_s",
            "epoch_s_estimate", "infer_samples_per_s", "peak_rss_mib", "peak_gpu_mib")
    rows = [[str(r.get(c, "")) for c in cols] for r in report["results"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print(f"device: {report['device']} ({report['mode']}, {report['precision']}, {report['cpu_threads']} threads), "
          f"catalog {report['catalog']}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    for key in ("demo_stage_wall_s", "library_train_check"):
        if key in report:
            print(f"{key}: {report[key]}")


if __name__ == "__main__":
    main()

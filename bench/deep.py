"""Benchmark of the deep models: training and inference samples/s per model and profile, peak memory.

CPU mode (default) uses the default sample's stage files (data/processed/) and, with
``--stage-times``, also times the demo stages exactly as `dvc repro` runs them.

GPU mode (``--gpu``, run by bench/gpu_check.sh) measures every backbone family of
bench/backbones.py at real size on one CUDA GPU, with what makes the hardware fast (bf16 autocast,
SDPA attention where the architecture has it, fused AdamW, channels_last CNNs, cuDNN autotuning,
TF32, optional ``torch.compile`` with ``COMPILE=1``): training and inference samples/s, peak GPU
memory and model FLOPs utilisation (MFU: FLOPs counted by ``torch.utils.flop_counter`` on real
batches, divided by the time and the device's dense bf16 peak). Texts follow the generated
catalog's token-length distribution (capped at 256), in length-grouped batches with dynamic
padding and, for comparison, padded to 256. Images: decoded and resized once into a uint8 cache
(pinned memory), augmented on the GPU (crop/zoom, rotation, flip, colour jitter), versus the
library's DataLoader path decoding JPEGs in worker processes. Then, as before, the library's own
code paths (full profiles) on the generated catalog. Every model runs under a time budget; a
failure (OOM, a model missing from timm) is recorded and the run goes on. Prints a table and
writes JSON (after every model, so a killed run keeps what it measured).

    python bench/deep.py                         # CPU: demo + full profiles, a few steps each
    python bench/deep.py --stage-times           # + wall time of `python stages/camembert.py` / resnet50.py
    python bench/deep.py --gpu                   # see bench/gpu_check.sh
    python bench/deep.py --cpu-smoke --out /tmp/smoke.json   # GPU mode's code paths on the CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import backbones as BB  # first: keeps the Hugging Face hub offline before transformers loads
import numpy as np
import pandas as pd
import torch

from rakuten.contracts.classes import N_CLASSES
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.io import write_json
from rakuten.core.logs import setup_logging
from rakuten.core.params import load_params
from rakuten.models import camembert as C
from rakuten.models import resnet50 as R
from rakuten.runtime.torch_setup import Runtime, choose_runtime, frame_labels, seed_everything, set_threads

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


# --------------------------------------------------------------------------------- the models


def bench_camembert(
    frame: pd.DataFrame, cfg: C.CamembertConfig, runtime: Runtime, max_steps: int, budget_s: float, n_infer: int
) -> dict:
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
    loader = torch.utils.data.DataLoader(
        C.EncodedTexts(enc, labels),
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=DataCollatorWithPadding(tokenizer),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
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


def bench_resnet(
    frame: pd.DataFrame, cfg: R.ResnetConfig, runtime: Runtime, max_steps: int, budget_s: float, n_infer: int
) -> dict:
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
    ds = R.ImageRows(
        R.image_paths(frame),
        labels,
        np.ones(len(frame)),
        R.build_transform(cfg.image_size, cfg.augment),
        cfg.image_size,
    )
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
    from rakuten.data.ingest import load_catalog
    from rakuten.data.sample import SampleConfig, write_sample

    write_sample(SampleConfig(n_train=rows, n_test=0, image_size=image_size, n_jobs=n_jobs), out_dir)
    catalog, _ = load_catalog(out_dir)
    text = catalog["designation"].fillna("").astype(str) + " " + catalog["description"].fillna("").astype(str)
    return catalog.assign(
        text_light=text.str.replace(r"<[^>]+>", " ", regex=True).str.split().str.join(" "),
        clean_path=catalog["image_path"].astype(str),
        readable=True,
        keep_for_train=True,
        sample_weight=1.0,
        split="train",
    )


# ------------------------------------------------------------------------------------ profiles


def profile_configs(params: dict, gpu: bool, profiles: tuple[str, ...] | None = None) -> list[tuple[str, str, object]]:
    """(model, profile, config) to benchmark. Full CamemBERT without weights = base-size config, random init."""
    out = []
    for profile in profiles or (["full"] if gpu else ["demo", "full"]):
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
        done = subprocess.run(
            [sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=REPO, capture_output=True, text=True
        )
        out[stage] = {"wall_s": round(time.perf_counter() - start, 1), "returncode": done.returncode}
        if done.returncode:
            log.warning("stage %s failed: %s", stage, done.stderr.strip().splitlines()[-1:])
    return out


def smoke_train_on_device(frame: pd.DataFrame, params: dict, rows: int, device: str, profile: str = "full") -> dict:
    """The library's own ``train`` + ``predict_proba`` (Trainer, early stopping...) on ``rows`` rows, 1 epoch."""
    out = {}
    part = frame.iloc[:rows]
    train, val = part.iloc[: int(rows * 0.8)], part.iloc[int(rows * 0.8) :]
    configs = profile_configs(params, True, (profile,))
    for name, module, cfg in (("camembert", C, configs[0][2]), ("resnet50", R, configs[1][2])):
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


# --------------------------------------------------------------------------- GPU: every family

# dense bf16 peak (no sparsity) by device name, for MFU; an unknown device gives MFU null
PEAK_BF16_FLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H200",), 989.4e12),
    (("H100", "PCIE"), 756e12),
    (("H100", "HBM3"), 989.4e12),
    (("H100", "SXM"), 989.4e12),
    (("A100",), 312e12),
    (("NVIDIA L4",), 121e12),
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TEXT_TARGET = 1500.0  # base-size text encoder, train samples/s at the catalog's length distribution
IMAGE_TARGET = 3000.0  # ResNet50 at 224 px, train images/s


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 FLOP/s of ``device_name`` from the table, None when not in it (MFU is then null)."""
    name = device_name.upper()
    for parts, peak in PEAK_BF16_FLOPS:
        if all(p.upper() in name for p in parts) and not (parts == ("NVIDIA L4",) and "L40" in name):
            return peak
    return None


@dataclass(frozen=True)
class GpuSetup:
    """Sizes and switches of one GPU-mode run (``--cpu-smoke`` shrinks them to test the code paths)."""

    runtime: Runtime
    budget_s: float  # timed seconds per model, shared among its phases
    max_steps: int  # 0 = the budget alone decides
    warmup: int
    compile: bool
    tiny: bool
    text_batch: int  # 0 = the family's own (128; 64 for the large encoder)
    image_batch: int  # 0 = the family's own (256)
    workers: int
    loader_models: tuple[str, ...]
    peak_flops: float | None

    @property
    def cuda(self) -> bool:
        return self.runtime.device == "cuda"

    def autocast(self):
        return torch.autocast(
            self.runtime.device, dtype=self.runtime.autocast_dtype, enabled=self.runtime.autocast_dtype is not None
        )


def fast_gpu_settings(cuda: bool) -> dict:
    """What makes the GPU fast and is off in the library's reproducible mode: cuDNN autotuning,
    non-deterministic kernels allowed, TF32 for the fp32 matmuls left outside autocast."""
    if not cuda:
        return {"cudnn_benchmark": False, "deterministic": True, "tf32": False}
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return {"cudnn_benchmark": True, "deterministic": False, "tf32": True}


class FlopCountError(RuntimeError):
    """The flop counter failed on a model: its throughput stands, its MFU is null."""


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` as ``torch.utils.flop_counter`` counts them (matmuls, convolutions, SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model the counter cannot trace keeps its samples/s
        raise FlopCountError(_error(exc)) from exc
    return int(counter.get_total_flops())


def flops_or_error(res: dict, count, setup: GpuSetup) -> dict:
    """``with_mfu(res, count())``; a flop-counter failure leaves FLOP/s and MFU null with the reason."""
    try:
        return with_mfu(res, count(), setup)
    except FlopCountError as exc:
        log.warning("flop count failed: %s", exc)
        res.update(flops_per_s=None, mfu=None, flops_error=str(exc))
        return res


def timed_phase(step, setup: GpuSetup, budget_s: float, clock: Clock) -> dict:
    """``setup.warmup`` untimed calls of ``step(k) -> (samples, key)``, then timed calls until
    ``budget_s`` or ``setup.max_steps``; the keys of the timed calls (e.g. padded widths) come back."""
    k = 0
    for k in range(setup.warmup):
        step(k)
    k = setup.warmup
    keys, samples, t0 = [], 0, clock.now()
    while True:
        n, key = step(k)
        samples, k = samples + n, k + 1
        keys.append(key)
        if (setup.max_steps and len(keys) >= setup.max_steps) or time.perf_counter() - t0 > budget_s:
            break
    wall = clock.now() - t0
    return {
        "steps": len(keys),
        "wall_s": round(wall, 2),
        "samples_per_s": round(samples / max(wall, 1e-9), 1),
        "_keys": keys,
        "_wall": wall,
    }


def with_mfu(res: dict, flops: float, setup: GpuSetup) -> dict:
    """Add FLOP/s (``flops`` = all FLOPs of the timed steps) and MFU against the device's bf16 peak."""
    rate = flops / max(res["_wall"], 1e-9)
    res["flops_per_s"] = float(f"{rate:.4g}")
    res["mfu"] = round(rate / setup.peak_flops, 4) if setup.peak_flops else None
    return res


def _opt(params, setup: GpuSetup) -> tuple[torch.optim.Optimizer, bool]:
    """AdamW, fused (one kernel for all parameters) on CUDA."""
    fused = setup.cuda
    return torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01, fused=fused), fused


def _phase_memory(setup: GpuSetup) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if setup.cuda else None


def _reset_memory(setup: GpuSetup) -> None:
    if setup.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _public(res: dict) -> dict:
    return {k: v for k, v in res.items() if not k.startswith("_")}


class TextData:
    """One tokenizer's view of the catalog: token ids on the device, lengths on the host."""

    def __init__(self, tokenizer, desc: str, texts: list[str], cap: int, device: str):
        ids = BB.token_ids(tokenizer, texts, cap)
        self.pad_id = tokenizer.pad_token_id
        mat, self.lengths = BB.ids_matrix(ids, cap, self.pad_id)
        self.mat = torch.from_numpy(mat).to(device)
        self.lengths_dev = torch.from_numpy(self.lengths).to(device)
        self.stats, self.desc, self.cap, self.vocab = BB.length_stats(ids, cap), desc, cap, len(tokenizer)

    def batches(self, batch_size: int, seed: int) -> list[np.ndarray]:
        return BB.length_grouped_batches(self.lengths, batch_size, seed)

    def batch(self, idx: np.ndarray | torch.Tensor, width: int) -> dict:
        """The rows ``idx`` (better a device tensor: uploading a host array waits for the queued work)."""
        idx = idx if torch.is_tensor(idx) else torch.as_tensor(idx, device=self.mat.device)
        return BB.pad_batch(self.mat, self.lengths_dev, idx, fixed=width)


def text_flops(
    count_one, batches: list[np.ndarray], data: TextData, widths_used: list[int], fixed: int | None
) -> float:
    """FLOPs of the timed steps: counted on real batches of up to three padded widths (shortest,
    median, longest used) and, for more widths, interpolated by the quadratic in width that a
    transformer's cost is (linear layers ~ width, attention ~ width^2) at a fixed batch size."""
    by_width: dict[int, np.ndarray] = {}
    for b in batches:
        by_width.setdefault(fixed or BB.padded_width(data.lengths[b]), b)
    used = sorted(set(widths_used))
    probe = used if len(used) <= 3 else [used[0], used[len(used) // 2], used[-1]]
    counted = {w: count_one(by_width[w], w) for w in probe}
    if len(probe) < 3:
        return float(sum(counted[w] for w in widths_used))
    coef = np.polyfit(np.array(probe, float), np.array([counted[w] for w in probe], float), 2)
    return float(sum(counted.get(w, np.polyval(coef, w)) for w in widths_used))


def bench_text_gpu(fam, data: TextData, setup: GpuSetup, batch: int) -> dict:
    """Train (dynamic + fixed-256 padding) and inference (both) of one text family."""
    dev = setup.runtime.device
    eager, info = BB.build_text(fam, data.pad_id, tiny=setup.tiny, attention="sdpa", vocab_size=data.vocab)
    eager.to(dev)
    model = torch.compile(eager, dynamic=True) if setup.compile else eager
    opt, fused = _opt(eager.parameters(), setup)
    clock = Clock(setup.runtime)
    gen = torch.Generator(device=dev).manual_seed(0)
    out: dict = {
        **info,
        "params_m": BB.params_m(eager),
        "batch_size": batch,
        "infer_batch_size": 2 * batch,
        "fused_adamw": fused,
        "compiled": setup.compile,
        "tokenizer": data.desc,
        "token_length": data.stats,
        "train": {},
        "infer": {},
    }

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, N_CLASSES, (n,), device=dev, generator=gen)

    def train_once(m, inputs: dict, y: torch.Tensor) -> None:
        with setup.autocast():
            logits = m(**inputs).logits
        torch.nn.functional.cross_entropy(logits.float(), y).backward()

    def infer_once(m, inputs: dict, counting: bool = False) -> None:
        # counting: autograd on (same FLOPs), as the flop counter's module tracker hooks gradients and fails
        # under inference_mode or no_grad on models that feed a parameter to a submodule (DeBERTa, SigLIP)
        with contextlib.nullcontext() if counting else torch.inference_mode(), setup.autocast():
            m(**inputs)

    phases = (
        ("train", "dynamic", None, batch, 0.4),
        ("train", "fixed_256", data.cap, batch, 0.3),
        ("infer", "dynamic", None, 2 * batch, 0.15),
        ("infer", "fixed_256", data.cap, 2 * batch, 0.15),
    )
    for what, padding, fixed, bs, share in phases:
        batches = data.batches(bs, seed=1)
        on_device = torch.as_tensor(np.stack(batches), device=dev)  # uploaded once, sliced per step
        eager.train(what == "train")
        _reset_memory(setup)

        def step(k: int, batches=batches, on_device=on_device, fixed=fixed, bs=bs, what=what) -> tuple[int, int]:
            j = k % len(batches)
            width = fixed or BB.padded_width(data.lengths[batches[j]])
            inputs = data.batch(on_device[j], width)
            if what == "train":
                train_once(model, inputs, labels(bs))
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                infer_once(model, inputs)
            return bs, width

        res = timed_phase(step, setup, setup.budget_s * share, clock)
        res["peak_gpu_mib"] = _phase_memory(setup)
        real = sum(
            int(data.lengths[batches[k % len(batches)]].sum()) for k in range(setup.warmup, setup.warmup + res["steps"])
        )
        padded = sum(res["_keys"]) * bs
        res["tokens_per_s"] = round(real / res["_wall"], 1)
        res["padded_tokens_per_s"] = round(padded / res["_wall"], 1)
        res["padding_efficiency"] = round(real / max(padded, 1), 3)

        def count_one(idx, width, what=what, bs=bs):
            inputs = data.batch(idx, width)
            if what == "train":
                flops = count_flops(lambda: train_once(eager, inputs, labels(bs)))
                opt.zero_grad(set_to_none=True)
                return flops
            return count_flops(lambda: infer_once(eager, inputs, counting=True))

        def total(res=res, count_one=count_one, batches=batches, fixed=fixed, bs=bs) -> float:
            flops = text_flops(count_one, batches, data, res["_keys"], fixed)
            res["flops_per_sample"] = float(f"{flops / max(res['steps'] * bs, 1):.4g}")
            return flops

        out[what][padding] = _public(flops_or_error(res, total, setup))
    del model, eager, opt
    return with_headline(out, "dynamic")


def with_headline(out: dict, path: str) -> dict:
    """``out`` plus the family's headline figures, taken from its ``path`` measurements (the fast path)."""
    train = out["train"][path]
    out.update(
        train_samples_per_s=train["samples_per_s"],
        infer_samples_per_s=out["infer"][path]["samples_per_s"],
        mfu=train["mfu"],
        peak_gpu_mib=train["peak_gpu_mib"],
        epoch_s_estimate=round(BB.TRAIN_ROWS / max(train["samples_per_s"], 1e-9), 1),
    )
    return out


# ------------------------------------------------------------------------------ GPU: images


class DecodedImages(torch.utils.data.Dataset):
    """JPEGs decoded (draft mode) and resized to ``size`` once, as uint8 CHW tensors: the cache's source."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            im.draft("RGB", (self.size, self.size))
            img = im.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def build_image_cache(
    paths: list[str], size: int, workers: int, cuda: bool, seed: int = 0
) -> tuple[torch.Tensor, dict]:
    """All images decoded once into one uint8 tensor (pinned on CUDA, so batches copy asynchronously),
    rows in a shuffled order so that contiguous slices are random batches."""
    order = np.random.default_rng(seed).permutation(len(paths))
    loader = torch.utils.data.DataLoader(
        DecodedImages([paths[i] for i in order], size), batch_size=256, num_workers=workers
    )
    start = time.perf_counter()
    cache = torch.empty((len(paths), 3, size, size), dtype=torch.uint8, pin_memory=cuda)
    at = 0
    for chunk in loader:
        cache[at : at + len(chunk)] = chunk
        at += len(chunk)
    wall = time.perf_counter() - start
    return cache, {
        "images": len(paths),
        "size": size,
        "pinned": cuda,
        "workers": workers,
        "build_s": round(wall, 1),
        "decode_images_per_s": round(len(paths) / max(wall, 1e-9), 1),
        "mib": round(cache.numel() / 2**20, 1),
    }


@functools.lru_cache(maxsize=None)
def _aug_constants(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey weights, ImageNet mean and std on ``device``, made once (a host-to-device copy syncs)."""

    def col(values):
        return torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    return col((0.299, 0.587, 0.114)), col(IMAGENET_MEAN), col(IMAGENET_STD)


def gpu_augment(x: torch.Tensor, size: int, gen: torch.Generator, train: bool) -> torch.Tensor:
    """uint8 NCHW batch on the device -> normalised float, channels_last. Train: the library's
    augmentations done on the GPU in one resampling (zoom crop >= 80% of the area, rotation within
    10 degrees, horizontal flip) plus brightness/contrast/saturation jitter of 0.2 (hue left out)."""
    n, dev = x.shape[0], x.device
    gray_w, mean, std = _aug_constants(str(dev))
    x = x.float().div_(255)
    if train:

        def u(lo, hi):
            return lo + (hi - lo) * torch.rand(n, device=dev, generator=gen)

        scale = u(0.8, 1.0).sqrt()
        angle = u(-10.0, 10.0) * (np.pi / 180)
        flip = torch.where(torch.rand(n, device=dev, generator=gen) < 0.5, -1.0, 1.0)
        tx, ty = u(-1, 1) * (1 - scale), u(-1, 1) * (1 - scale)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta, [n, 3, size, size], align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = x * u(0.8, 1.2).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * u(0.8, 1.2).view(n, 1, 1, 1) + mean
        gray = (x * gray_w).sum(1, keepdim=True)
        x = ((x - gray) * u(0.8, 1.2).view(n, 1, 1, 1) + gray).clamp_(0, 1)
    elif x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def _cycle(loader):
    while True:
        yield from loader


def bench_image_gpu(fam, cache: torch.Tensor, frame: pd.DataFrame, setup: GpuSetup, batch: int, size: int) -> dict:
    """GPU-fed train + inference of one image family; the DataLoader path too for ``setup.loader_models``."""
    dev = setup.runtime.device
    eager, info = BB.build_image(fam, tiny=setup.tiny, image_size=size)
    eager = eager.to(dev, memory_format=torch.channels_last)
    model = torch.compile(eager) if setup.compile else eager
    opt, fused = _opt(eager.parameters(), setup)
    clock = Clock(setup.runtime)
    gen = torch.Generator(device=dev).manual_seed(0)
    out: dict = {
        **info,
        "params_m": BB.params_m(eager),
        "image_size": size,
        "batch_size": batch,
        "infer_batch_size": 2 * batch,
        "fused_adamw": fused,
        "compiled": setup.compile,
        "channels_last": True,
        "train": {},
        "infer": {},
    }
    n_batches = {bs: max(1, len(cache) // bs) for bs in (batch, 2 * batch)}
    order = {bs: np.random.default_rng(bs).permutation(n_batches[bs]) for bs in n_batches}

    def cached(k: int, bs: int) -> torch.Tensor:
        j = int(order[bs][k % n_batches[bs]])
        return cache[j * bs : (j + 1) * bs].to(dev, non_blocking=True)

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, N_CLASSES, (n,), device=dev, generator=gen)

    def train_once(m, x: torch.Tensor, y: torch.Tensor) -> None:
        with setup.autocast():
            logits = m(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()

    def train_step(x: torch.Tensor) -> int:
        train_once(model, x, labels(x.shape[0]))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(x.shape[0])

    # GPU-fed training
    eager.train()
    _reset_memory(setup)
    res = timed_phase(
        lambda k: (train_step(gpu_augment(cached(k, batch), size, gen, True)), None), setup, setup.budget_s * 0.5, clock
    )
    res["peak_gpu_mib"] = _phase_memory(setup)
    x0 = gpu_augment(cached(0, batch), size, gen, True)

    def train_total(res=res) -> float:
        per_sample = count_flops(lambda: train_once(eager, x0, labels(x0.shape[0]))) / x0.shape[0]
        opt.zero_grad(set_to_none=True)
        res["flops_per_sample"] = float(f"{per_sample:.4g}")
        return per_sample * res["steps"] * batch

    out["train"]["gpu_fed"] = _public(flops_or_error(res, train_total, setup))
    train_per_sample = out["train"]["gpu_fed"].get("flops_per_sample")

    # GPU-fed inference
    eager.eval()
    _reset_memory(setup)

    def infer_step(k: int) -> tuple[int, None]:
        x = gpu_augment(cached(k, 2 * batch), size, gen, False)
        with torch.inference_mode(), setup.autocast():
            model(x)
        return int(x.shape[0]), None

    res = timed_phase(infer_step, setup, setup.budget_s * 0.25, clock)
    res["peak_gpu_mib"] = _phase_memory(setup)
    xi = gpu_augment(cached(0, 2 * batch), size, gen, False)

    def infer_once() -> None:
        with setup.autocast():  # autograd on: see bench_text_gpu's infer_once
            eager(xi)

    def infer_total(res=res) -> float:
        per_sample = count_flops(infer_once) / xi.shape[0]
        res["flops_per_sample"] = float(f"{per_sample:.4g}")
        return per_sample * res["steps"] * 2 * batch

    out["infer"]["gpu_fed"] = _public(flops_or_error(res, infer_total, setup))

    if fam.key in setup.loader_models:  # the library's data path: JPEG decode + augment in workers
        eager.train()
        ds = R.ImageRows(
            frame["clean_path"].astype(str).tolist(),
            frame_labels(frame),
            np.ones(len(frame)),
            R.build_transform(size, R.Augment()),
            size,
        )
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=batch,
            shuffle=True,
            num_workers=setup.workers,
            pin_memory=setup.cuda,
            drop_last=True,
            persistent_workers=setup.workers > 0,
            prefetch_factor=4 if setup.workers else None,
        )
        it = _cycle(loader)
        only = timed_phase(lambda k: (len(next(it)[0]), None), setup, setup.budget_s * 0.1, clock)
        _reset_memory(setup)

        def loader_step(k: int) -> tuple[int, None]:
            x, _, _ = next(it)
            x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            return train_step(x), None

        res = timed_phase(loader_step, setup, setup.budget_s * 0.3, clock)
        res["peak_gpu_mib"] = _phase_memory(setup)
        res["loader_only_images_per_s"] = only["samples_per_s"]
        res["workers"] = setup.workers
        if train_per_sample is None:
            res.update(flops_per_s=None, mfu=None)
        else:
            with_mfu(res, train_per_sample * res["steps"] * batch, setup)
        out["train"]["dataloader"] = _public(res)
        del it, loader
    del model, eager, opt
    return with_headline(out, "gpu_fed")


def _error(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


def run_family(fn, batch: int, setup: GpuSetup) -> dict:
    """``fn(batch)``; out of memory: retry once at half the batch; any other failure: an error entry."""
    for attempt in (batch, batch // 2):
        oom = None
        try:
            res = fn(attempt)
            if attempt != batch:
                res["batch_halved_after_oom"] = batch
            return res
        except torch.cuda.OutOfMemoryError as exc:
            oom = _error(exc)
            log.warning(
                "out of memory at batch %d; %s", attempt, "retrying at half" if attempt == batch else "giving up"
            )
        except Exception as exc:  # noqa: BLE001 - a missing timm model or a library change must not stop the run
            log.exception("failed")
            return {"error": _error(exc)}
        finally:
            gc.collect()
            if setup.cuda:
                torch.cuda.empty_cache()
        if attempt < 2:
            break
    return {"error": oom or "out of memory"}


def gpu_families(
    report: dict,
    frame: pd.DataFrame,
    texts: list[str],
    setup: GpuSetup,
    image_size: int,
    workers: int,
    deadline: float,
    out_path: str | None,
    only: list[str],
) -> None:
    """Every family of bench/backbones.py, the targets first; the JSON is rewritten after each."""
    fams = [BB.family(k) for k in BB.TARGET_FAMILIES] + [f for f in BB.FAMILIES if f.key not in BB.TARGET_FAMILIES]
    fams = [f for f in fams if not only or f.key in only]
    report["families"] = {}
    start = time.perf_counter()
    datasets: dict[str, TextData] = {}
    shared_bpe = None
    cache = None
    for fam in fams:
        if deadline and time.perf_counter() - start > deadline:
            report["families"][fam.key] = {
                "kind": fam.kind,
                "hub_id": fam.hub_id,
                "error": f"skipped: the run's deadline of {deadline:.0f} s was reached",
            }
            continue
        log.info("GPU bench: %s", fam.key)
        t0 = time.perf_counter()
        try:
            if fam.kind == "text":
                if shared_bpe is None:  # for every family whose own tokenizer is not on disk
                    from rakuten.models.camembert import train_tokenizer

                    tok = train_tokenizer(texts[:20000], 32000)
                    shared_bpe = (tok, f"BPE trained on the catalog texts (asked 32000, got {len(tok)} tokens)")
                tokenizer, desc = BB.text_tokenizer(fam, texts, fallback=shared_bpe)
                if desc not in datasets:
                    datasets[desc] = TextData(tokenizer, desc, texts, BB.MAX_TOKENS, setup.runtime.device)
                data = datasets[desc]
                batch = setup.text_batch or fam.gpu_batch
                res = run_family(lambda bs: bench_text_gpu(fam, data, setup, bs), batch, setup)
            else:
                if cache is None:
                    cache, report["image_cache"] = build_image_cache(
                        frame["clean_path"].astype(str).tolist(), image_size, workers, setup.cuda
                    )
                batch = setup.image_batch or fam.gpu_batch
                res = run_family(lambda bs: bench_image_gpu(fam, cache, frame, setup, bs, image_size), batch, setup)
        except Exception as exc:  # noqa: BLE001 - tokenizer or cache failures are per-family too
            log.exception("%s failed", fam.key)
            res = {"error": _error(exc)}
        report["families"][fam.key] = {
            "kind": fam.kind,
            "hub_id": fam.hub_id,
            "source": fam.source,
            "wall_s": round(time.perf_counter() - t0, 1),
            **res,
        }
        report["text_token_length"] = {d: t.stats for d, t in datasets.items()}
        report["targets"] = targets(report["families"])
        if out_path:
            write_json(report, out_path)
    del cache, datasets


def targets(families: dict) -> dict:
    """Pass/fail of the two throughput targets (None when the model was not measured)."""
    text = families.get("camembert-base", {})
    image = families.get("resnet50", {})
    loader = image.get("train", {}).get("dataloader", {})

    def verdict(value, target):
        return None if value is None else bool(value >= target)

    return {
        "base_text_train_ge_1500_per_s": {
            "model": "camembert-base",
            "padding": "dynamic, length-grouped (the catalog's distribution)",
            "target": TEXT_TARGET,
            "value": text.get("train_samples_per_s"),
            "pass": verdict(text.get("train_samples_per_s"), TEXT_TARGET),
            "fixed_256_value": text.get("train", {}).get("fixed_256", {}).get("samples_per_s"),
        },
        "resnet50_224_train_ge_3000_per_s": {
            "model": "resnet50",
            "input": "GPU-fed (uint8 cache + GPU augmentation)",
            "target": IMAGE_TARGET,
            "value": image.get("train_samples_per_s"),
            "pass": verdict(image.get("train_samples_per_s"), IMAGE_TARGET),
            "dataloader_value": loader.get("samples_per_s"),
            "dataloader_pass": verdict(loader.get("samples_per_s"), IMAGE_TARGET),
        },
    }


def print_columns(cols: tuple[str, ...], rows: list[list[str]]) -> None:
    """A plain-text table: the header and the rows, each column as wide as its widest cell."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def print_gpu_table(report: dict) -> None:
    cols = (
        "family",
        "params_m",
        "batch",
        "train/s",
        "train/s fixed256",
        "train/s loader",
        "infer/s",
        "MFU train",
        "peak GPU MiB",
        "init",
    )
    rows = []
    for key, r in report.get("families", {}).items():
        if "error" in r:
            rows.append([key, "error: " + r["error"][:90]] + [""] * (len(cols) - 2))
            continue
        tr = r.get("train", {})
        rows.append(
            [
                key,
                str(r.get("params_m")),
                str(r.get("batch_size")),
                str(r.get("train_samples_per_s")),
                str(tr.get("fixed_256", {}).get("samples_per_s", "")),
                str(tr.get("dataloader", {}).get("samples_per_s", "")),
                str(r.get("infer_samples_per_s")),
                str(r.get("mfu")),
                str(r.get("peak_gpu_mib")),
                r.get("init", "").split(" (")[0],
            ]
        )
    if not rows:
        return
    print(
        f"backbones on {report['device']} (bf16 peak {report.get('peak_bf16_flops')}), settings "
        f"{report.get('settings')}"
    )
    print_columns(cols, rows)
    for name, t in report.get("targets", {}).items():
        state = {True: "PASS", False: "FAIL", None: "not measured"}[t["pass"]]
        print(f"target {name}: {state} ({t['value']} vs {t['target']})")
    for desc, stats in report.get("text_token_length", {}).items():
        print(f"token lengths ({desc}): {stats}")


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="GPU mode: every backbone family + the library paths")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="GPU mode's code paths on the CPU at tiny sizes (few steps, tiny batches and models)",
    )
    parser.add_argument("--rows", type=int, default=12000, help="GPU mode: generated catalog rows (with JPEGs)")
    parser.add_argument("--image-size", type=int, default=500, help="GPU mode: generated JPEG side (real: 500)")
    parser.add_argument("--input-size", type=int, default=224, help="GPU mode: image side the backbones see")
    parser.add_argument("--text-rows", type=int, default=84916, help="GPU mode: catalog rows whose texts are tokenised")
    parser.add_argument("--jobs", type=int, default=16, help="GPU mode: processes generating the catalog")
    parser.add_argument("--workers", type=int, default=8, help="GPU mode: DataLoader workers (JPEG decoding)")
    parser.add_argument("--steps", type=int, default=0, help="max timed steps per phase (0: CPU 8, GPU the budget)")
    parser.add_argument("--budget", type=float, default=0, help="timed seconds per model (0: CPU 120, GPU 12)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=0,
        help="GPU mode: skip the families left after this many seconds of family benchmarks (0: none)",
    )
    parser.add_argument("--only", default="", help="GPU mode: comma-separated family keys (default: all)")
    parser.add_argument("--text-batch", type=int, default=0, help="GPU mode: text train batch (0: 128, large 64)")
    parser.add_argument("--image-batch", type=int, default=0, help="GPU mode: image train batch (0: 256)")
    parser.add_argument(
        "--loader-models", default="resnet50", help="GPU mode: image families also timed through the DataLoader path"
    )
    parser.add_argument("--no-library", action="store_true", help="GPU mode: skip the library-path measurements")
    parser.add_argument("--infer", type=int, default=0, help="rows for library inference timing (0: CPU 256, GPU 4096)")
    parser.add_argument("--smoke-rows", type=int, default=2000, help="GPU mode: rows for the library train check")
    parser.add_argument(
        "--device",
        default=None,
        choices=("cuda", "cpu"),
        help="GPU mode on another device (cpu: real sizes on the CPU, slow; see --cpu-smoke)",
    )
    parser.add_argument("--profiles", default="demo,full", help="CPU mode: which profiles to measure")
    parser.add_argument("--stage-times", action="store_true", help="CPU mode: also time the demo stage scripts")
    parser.add_argument("--out", default=None, help="JSON path (default reports/bench/deep.json or gpu.json)")
    args = parser.parse_args()
    setup_logging()
    if args.cpu_smoke:
        args.gpu, args.device = True, "cpu"
    try:
        params = load_params(REPO / "params.yaml")
    except Exception as exc:  # noqa: BLE001 - GPU mode: the families do not need params, only the library paths
        if not args.gpu:
            raise
        log.warning("params.yaml unreadable (%s): the library paths will be skipped", exc)
        params = {"_error": _error(exc)}
    runtime = choose_runtime(args.device or ("cuda" if args.gpu else "cpu"), "auto")
    if args.cpu_smoke:
        threads = set_threads(1)  # tiny models: one thread (two fight other processes on a shared box)
    else:
        threads = set_threads(
            0
            if runtime.device == "cuda"
            else parse_section(C.CamembertConfig, params["camembert"], "camembert").num_threads
        )
    if not args.gpu:
        return cpu_main(args, params, runtime, threads)
    gpu_main(args, params, runtime, threads)


def gpu_main(args, params: dict, runtime: Runtime, threads: int) -> None:
    """Every backbone family on the device, then the library's own paths; JSON after each model."""
    smoke = args.cpu_smoke
    out = args.out or (str(Path(tempfile.gettempdir()) / "gpu_cpu_smoke.json") if smoke else "reports/bench/gpu.json")
    device_name = torch.cuda.get_device_name(0) if runtime.device == "cuda" else platform.processor() or "cpu"
    peak = peak_bf16_flops(device_name) if runtime.device == "cuda" else None
    compile_ = os.environ.get("COMPILE", "0") not in ("0", "", "false")
    setup = GpuSetup(
        runtime=runtime,
        budget_s=args.budget or (1.0 if smoke else 12.0),
        max_steps=args.steps or (2 if smoke else 0),
        warmup=1 if smoke else 3,
        compile=compile_,
        tiny=smoke,
        text_batch=args.text_batch or (4 if smoke else 0),
        image_batch=args.image_batch or (4 if smoke else 0),
        workers=0 if smoke else args.workers,
        loader_models=tuple(k for k in args.loader_models.split(",") if k),
        peak_flops=peak,
    )
    settings = {
        "precision": f"{runtime.precision} autocast, fp32 master weights" if runtime.autocast_dtype else "fp32",
        "attention": "sdpa where the architecture has it (per family: 'attention')",
        "optimizer": "AdamW, fused on CUDA",
        "channels_last_cnns": True,
        "torch_compile": compile_,
        "text_padding": f"length-grouped batches, dynamic padding to a multiple of {BB.PAD_MULTIPLE} "
        f"(cap {BB.MAX_TOKENS}) vs fixed {BB.MAX_TOKENS}",
        "text_input": "token ids resident on the device, batches sliced there",
        "image_input": "uint8 cache (pinned host memory) + augmentation on the device vs DataLoader "
        f"JPEG decoding with {setup.workers} workers",
        "budget_s_per_model": setup.budget_s,
        "warmup_steps": setup.warmup,
        "max_steps": setup.max_steps,
        "flops": "torch.utils.flop_counter.FlopCounterMode on real batches (fwd+bwd for training)",
        **fast_gpu_settings(runtime.device == "cuda"),
    }
    report = {
        "mode": "cpu-smoke" if smoke else "gpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device_name,
        "cpu_threads": threads,
        "cpu_count": os.cpu_count(),
        "precision": runtime.precision,
        "peak_bf16_flops": peak,
        "settings": settings,
        "results": [],
    }
    rows, text_rows = (60, 300) if smoke else (args.rows, args.text_rows)
    image_size, input_size = (64, 32) if smoke else (args.image_size, args.input_size)
    with tempfile.TemporaryDirectory(prefix="bench-deep-") as tmp:
        start = time.perf_counter()
        frame = generated_frame(rows, image_size, 1 if smoke else args.jobs, Path(tmp) / "catalog")
        texts = BB.catalog_texts(text_rows)
        report["catalog"] = {
            "rows": len(frame),
            "image_size": image_size,
            "input_size": input_size,
            "text_rows": len(texts),
            "generate_s": round(time.perf_counter() - start, 1),
        }
        only = [k for k in args.only.split(",") if k]
        gpu_families(report, frame, texts, setup, input_size, setup.workers, args.deadline, out, only)
        if not args.no_library:
            library_paths(report, frame, params, runtime, setup, smoke, args)
    print_gpu_table(report)
    print_table(report)
    write_json(report, out)
    log.info("wrote %s", out)


def library_paths(
    report: dict, frame: pd.DataFrame, params: dict, runtime: Runtime, setup: GpuSetup, smoke: bool, args
) -> None:
    """The library's own code (full profiles; demo in the smoke run) as the earlier gpu_check measured it:
    the baseline the family figures improve on, and an end-to-end check of train/predict on the device."""
    profile = "demo" if smoke else "full"
    n_infer = args.infer or (16 if smoke else 4096)
    if "_error" in params:
        report["library_error"] = f"params.yaml: {params['_error']}"
        return
    try:
        configs = profile_configs(params, True, (profile,))
    except Exception as exc:  # noqa: BLE001 - params being edited elsewhere must not lose the family figures
        report["library_error"] = _error(exc)
        return
    for name, prof, cfg in configs:
        if name == "resnet50":
            cfg = replace(cfg, num_workers=setup.workers)
        log.info("library path: %s (%s profile)", name, prof)
        fn = bench_camembert if name == "camembert" else bench_resnet
        try:
            res = fn(frame, cfg, runtime, setup.max_steps, setup.budget_s, n_infer)
        except Exception as exc:  # noqa: BLE001
            log.exception("library path %s failed", name)
            res = {"error": _error(exc)}
        if name == "camembert":
            shape = f"{cfg.scratch.num_layers}x{cfg.scratch.hidden_size}" if cfg.model == C.SCRATCH else cfg.model
            label = f"{shape}, len {cfg.max_length}"
        else:
            label = f"{cfg.arch} {cfg.image_size}px"
        report["results"].append(
            {"model": name, "profile": prof, "config": label, "path": "library", "batch_size": cfg.batch_size, **res}
        )
    rows = 0 if smoke else args.smoke_rows
    if rows:
        try:
            report["library_train_check"] = smoke_train_on_device(frame, params, rows, runtime.device, profile)
        except Exception as exc:  # noqa: BLE001
            log.exception("library train check failed")
            report["library_train_check"] = {"error": _error(exc)}


def cpu_main(args, params: dict, runtime: Runtime, threads: int) -> None:
    """CPU mode, unchanged: demo + full profiles of the library on the default sample's stage files."""
    steps = args.steps or 8
    budget = args.budget or 120.0
    n_infer = args.infer or 256
    report = {
        "mode": "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": platform.processor() or platform.machine(),
        "cpu_threads": threads,
        "precision": runtime.precision,
        "results": [],
    }
    frame = stage_frame()
    report["catalog"] = {"rows": len(frame), "source": "data/processed (default sample, train split)"}
    for name, profile, cfg in profile_configs(params, False):
        if profile not in args.profiles.split(","):
            continue
        log.info("benchmarking %s (%s profile)", name, profile)
        fn = bench_camembert if name == "camembert" else bench_resnet
        res = fn(frame, cfg, runtime, steps, budget, n_infer)
        if name == "camembert":
            shape = f"{cfg.scratch.num_layers}x{cfg.scratch.hidden_size}" if cfg.model == C.SCRATCH else cfg.model
            label = f"{shape}, len {cfg.max_length}"
        else:
            label = f"{cfg.arch} {cfg.image_size}px"
        report["results"].append(
            {"model": name, "profile": profile, "config": label, "batch_size": cfg.batch_size, **res}
        )
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
    print(
        f"{'library paths on ' if report['mode'] != 'cpu' else ''}device: {report['device']} ({report['mode']}, "
        f"{report['precision']}, {report['cpu_threads']} threads), catalog {report['catalog']}"
    )
    print_columns(cols, rows)
    for key in ("demo_stage_wall_s", "library_train_check"):
        if key in report:
            print(f"{key}: {report[key]}")


if __name__ == "__main__":
    main()

"""ResNet image classifier (torchvision), fine-tuned on the cleaned images of ``image_clean``.

Two profiles (``resnet50.profile`` in params.yaml), same code path:

* ``full``: ResNet50 with ImageNet weights (resolved by :func:`rakuten.pretrained.resolve_torchvision`:
  torch cache, then download, else one line saying what to fetch and where), 224 px, study-like epochs;
* ``demo`` (default): a torchvision ResNet with ``weights: none`` at a small input size and capped
  rows/epochs, so it runs offline on 2 CPU cores in minutes.

Training follows the study: a new 27-class head, Adam(W), augmentations (flips, small rotations,
colour/HSV jitter, zoom), class rebalancing (loss class weights, a weighted sampler, or none), the
per-image ``sample_weight`` of image_clean, rows with ``keep_for_train = False`` left out (counted),
early stopping on validation weighted F1 with the best epoch's weights kept, dvclive curves.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from rakuten.classes import N_CLASSES, indices_to_codes
from rakuten.config import ProfileView, knob, parse_section
from rakuten.errors import PipelineError
from rakuten.io import atomic_path, read_parquet
from rakuten.metrics import scores
from rakuten.models.torch_utils import (DEVICES, PRECISIONS, Runtime, choose_runtime, class_weights,
                                        frame_labels, read_meta, seed_everything, set_threads, softmax_proba,
                                        stratified_cap, write_meta)

log = logging.getLogger(__name__)

NAME = "resnet50"
PROFILES = ("demo", "full")
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
REBALANCE = ("none", "class_weights", "sampler")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
QUALITY_COLUMNS = ("row_id", "clean_path", "readable", "keep_for_train", "sample_weight")


@dataclass(frozen=True)
class Augment:
    """``resnet50.augment``: training augmentations (study: flips, small rotations, brightness/contrast/HSV jitter, zoom)."""

    hflip: float = knob(0.5, "probability of a horizontal flip", lo=0.0, hi=1.0)
    vflip: float = knob(0.0, "probability of a vertical flip", lo=0.0, hi=1.0)
    rotation: float = knob(10.0, "max rotation either way, in degrees", lo=0.0, hi=180.0)
    brightness: float = knob(0.2, "colour jitter: brightness", lo=0.0, hi=1.0)
    contrast: float = knob(0.2, "colour jitter: contrast", lo=0.0, hi=1.0)
    saturation: float = knob(0.2, "colour jitter: saturation", lo=0.0, hi=1.0)
    hue: float = knob(0.02, "colour jitter: hue", lo=0.0, hi=0.5)
    zoom_min: float = knob(0.8, "random crop of >= this share of the area, resized back (1.0 = no zoom)",
                           lo=0.0, hi=1.0, lo_open=True)


@dataclass(frozen=True)
class ResnetProfile:
    """``resnet50.demo`` / ``resnet50.full``: what differs between the two profiles (values: their defaults)."""

    arch: str = knob(help="resnet18 | resnet34 | resnet50 | resnet101 (torchvision)", choices=ARCHS)
    weights: str = knob(help="none | imagenet (torch cache ~/.cache/torch/hub/checkpoints first, then download) "
                        "| path to a state-dict file", nonempty=True)
    image_size: int = knob(help="input side in px (the cleaned JPEGs are decoded at reduced size)", lo=32, hi=1024)
    max_train_rows: int = knob(help="0 = all usable train rows; else a stratified subset", lo=0)
    epochs: int = knob(help="max training epochs", lo=1, hi=500)
    batch_size: int = knob(help="training batch size", lo=1, hi=4096)
    learning_rate: float = knob(help="peak learning rate (one-cycle schedule)", lo=0.0, hi=1.0, lo_open=True)
    weight_decay: float = knob(help="AdamW weight decay", lo=0.0, hi=1.0)
    patience: int = knob(help="early stopping: epochs without a better val weighted F1", lo=1, hi=500)


@dataclass(frozen=True)
class ResnetConfig(ProfileView):
    """``resnet50``: shared knobs plus two profiles; ``cfg.epochs`` etc. read the selected profile."""

    profile: str = knob("demo", "demo = small ResNet from scratch, offline CPU, minutes; full = ResNet50 ImageNet "
                        "224 px (the study): `dvc exp run -S resnet50.profile=full`", choices=PROFILES)
    rebalance: str = knob("class_weights", "none | class_weights (loss) | sampler (WeightedRandomSampler)",
                          choices=REBALANCE)
    use_sample_weights: bool = knob(True, "per-image weights from image_clean; keep_for_train=false rows are "
                                    "always left out")
    augment: Augment = knob(Augment(), "training augmentations")
    eval_batch_size: int = knob(128, "batch size of evaluation and prediction", lo=1, hi=4096)
    num_workers: int = knob(0, "DataLoader worker processes (0 = decode in the main process; 8+ on a GPU box)",
                            lo=0, hi=64)
    seed: int = knob(42, "seed of initialisation, augmentations, sampling and the row subset", lo=0)
    device: str = knob("auto", "auto = CUDA when present, else CPU | cpu | cuda", choices=DEVICES)
    precision: str = knob("auto", "auto = bf16 (or fp16) on CUDA, fp32 on CPU | fp32 | fp16 | bf16",
                          choices=PRECISIONS)
    num_threads: int = knob(1, "torch CPU threads (0 = all cores)", lo=0, hi=256)
    demo: ResnetProfile = knob(ResnetProfile(
        arch="resnet18", weights="none", image_size=32, max_train_rows=2500, epochs=3, batch_size=64,
        learning_rate=0.002, weight_decay=0.0001, patience=2),
        "small ResNet from scratch at 32 px on a stratified subset: offline, 2 CPU cores, ~3 minutes")
    full: ResnetProfile = knob(ResnetProfile(
        arch="resnet50", weights="imagenet", image_size=224, max_train_rows=0, epochs=10, batch_size=64,
        learning_rate=0.0003, weight_decay=0.0001, patience=3),
        "the study: ResNet50 with ImageNet weights at 224 px (GPU)")


@dataclass
class ResnetModel:
    """A trained network plus the config it was trained with, its val history and row accounting."""

    net: torch.nn.Module
    config: ResnetConfig
    history: list[dict] = field(default_factory=list)
    rows: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------- frame

def load_image_frame(catalog: str | Path = "data/interim/catalog.parquet",
                     split: str | Path = "data/interim/split.parquet",
                     quality: str | Path = "data/processed/image_quality.parquet") -> pd.DataFrame:
    """Catalog rows (``row_id``, ``prdtypecode``) joined on ``row_id`` with their split and the
    image_clean columns; a catalog row without a quality row is a one-line error."""
    rows = read_parquet(catalog, stage_hint="ingest")[["row_id", "prdtypecode"]]
    rows = rows.merge(read_parquet(split, stage_hint="split")[["row_id", "split"]], on="row_id",
                      how="inner", validate="one_to_one")
    table = read_parquet(quality, stage_hint="image_clean")
    missing_cols = [c for c in QUALITY_COLUMNS if c not in table.columns]
    if missing_cols:
        raise PipelineError(f"{quality}: missing column {missing_cols[0]}; expected {', '.join(QUALITY_COLUMNS)}")
    frame = rows.merge(table[list(QUALITY_COLUMNS)], on="row_id", how="left", validate="one_to_one")
    absent = frame["clean_path"].isna()
    if absent.any():
        raise PipelineError(f"{quality}: no row for row_id {frame.loc[absent, 'row_id'].iloc[0]}; expected one "
                            "row per catalog row (rerun `dvc repro image_clean`)")
    return frame


def usable_train_rows(frame: pd.DataFrame, cfg: ResnetConfig) -> tuple[pd.DataFrame, dict]:
    """Train rows the network learns from, and the accounting of those left out and why."""
    keep = frame["keep_for_train"].fillna(False).to_numpy(dtype=bool)
    readable = frame["readable"].fillna(False).to_numpy(dtype=bool)
    counts = {"train_rows": int(len(frame)), "dropped_keep_for_train_false": int((~keep).sum()),
              "dropped_unreadable": int((keep & ~readable).sum())}
    usable = frame[keep & readable]
    capped = stratified_cap(usable["prdtypecode"].to_numpy(dtype=np.int64), cfg.max_train_rows, cfg.seed)
    counts["dropped_max_train_rows"] = int(len(usable) - len(capped))
    usable = usable.iloc[capped].reset_index(drop=True)
    counts["train_rows_used"] = int(len(usable))
    return usable, counts


# ----------------------------------------------------------------------------------------- data

def build_transform(size: int, augment: Augment | None):
    """Eval transform (``augment=None``): resize to ``size``; train: zoom crop, flips, rotation, colour jitter."""
    from torchvision.transforms import v2

    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if augment is None:
        return v2.Compose([v2.Resize((size, size), antialias=True), *tail])
    a = augment
    steps = [v2.RandomResizedCrop(size, scale=(a.zoom_min, 1.0), ratio=(0.9, 1.1), antialias=True)]
    if a.hflip:
        steps.append(v2.RandomHorizontalFlip(a.hflip))
    if a.vflip:
        steps.append(v2.RandomVerticalFlip(a.vflip))
    if a.rotation:
        steps.append(v2.RandomRotation(a.rotation, fill=255))  # product shots sit on white
    if a.brightness or a.contrast or a.saturation or a.hue:
        steps.append(v2.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue))
    return v2.Compose([*steps, *tail])


class ImageRows(torch.utils.data.Dataset):
    """Images decoded on the fly (JPEG draft mode: decoded near the target size) with label and weight."""

    def __init__(self, paths: list[str], labels: np.ndarray, weights: np.ndarray, transform, size: int):
        self.paths, self.labels, self.weights = paths, labels, weights
        self.transform, self.size = transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.paths[i]) as im:
                im.draft("RGB", (self.size, self.size))
                img = im.convert("RGB")
        except OSError as exc:
            raise PipelineError(f"{self.paths[i]}: cannot decode image ({exc}); rerun `dvc repro image_clean`") from None
        return self.transform(img), int(self.labels[i]), np.float32(self.weights[i])


def image_paths(frame: pd.DataFrame) -> list[str]:
    """``clean_path`` of every row (relative to the repository root or absolute); a missing file names its row."""
    if "clean_path" not in frame.columns:
        raise PipelineError("model frame: missing column clean_path; expected the image_clean columns "
                            "(data/processed/image_quality.parquet)")
    paths = frame["clean_path"].astype(str).tolist()
    for row_id, path in zip(frame["row_id"].tolist(), paths):
        if not Path(path).is_file():
            raise PipelineError(f"row_id {row_id}, column clean_path: {path} not found; "
                                "expected the cleaned image (rerun `dvc repro image_clean`)")
    return paths


def _loader(dataset, batch_size: int, cfg: ResnetConfig, runtime: Runtime, shuffle: bool = False,
            sampler=None) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, generator=gen,
        num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
        pin_memory=runtime.device == "cuda")


# ------------------------------------------------------------------------------------- network

def build_net(arch: str, weights_file: Path | None = None) -> torch.nn.Module:
    """torchvision ``arch`` with optional ImageNet/local weights and a new 27-class head."""
    import torchvision

    net = torchvision.models.get_model(arch, weights=None)
    if weights_file is not None:
        try:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PipelineError(f"{weights_file}: not a {arch} state dict ({first[:160]})") from None
    net.fc = torch.nn.Linear(net.fc.in_features, N_CLASSES)
    return net


def _logits(net: torch.nn.Module, loader, runtime: Runtime, desc: str) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for x, _, _ in tqdm(loader, desc=desc, leave=False, disable=len(loader) < 5):
            x = x.to(runtime.device, non_blocking=True)
            if runtime.device == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(runtime.device, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None):
                out.append(net(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES))


def _live(live_dir: str | Path | None):
    if not live_dir:
        return None
    from dvclive import Live

    return Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False)


def resolve_weights(cfg: ResnetConfig) -> Path | None:
    """The weights file (None for ``weights: none``); one-line PipelineError when it cannot be had."""
    from rakuten.pretrained import resolve_torchvision

    return resolve_torchvision(cfg.arch, cfg.weights)


def training_report(model: ResnetModel) -> dict:
    """What the stage writes to ``reports/training/resnet50.json``: profile, row accounting, val history."""
    cfg = model.config
    return {"profile": cfg.profile, "arch": cfg.arch, "weights": cfg.weights, "image_size": cfg.image_size,
            "rows": dict(model.rows), "history": model.history}


def train(train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: ResnetConfig,
          live_dir: str | Path | None = None) -> ResnetModel:
    """Fine-tune on the usable train rows; early stopping on val weighted F1; best epoch's weights kept.

    ``live_dir``: where dvclive writes the learning curves (None = no curves).
    """
    runtime = choose_runtime(cfg.device, cfg.precision)
    weights_file = resolve_weights(cfg)  # before any work: fails offline in one line
    threads = set_threads(cfg.num_threads)
    usable, rows = usable_train_rows(train_frame, cfg)
    if usable.empty:
        raise PipelineError("resnet50: no usable train rows (all have keep_for_train = False or unreadable images)")
    labels = frame_labels(usable)
    sample_w = (usable["sample_weight"].to_numpy(dtype=np.float64) if cfg.use_sample_weights
                else np.ones(len(usable)))
    if (sample_w < 0).any() or not np.isfinite(sample_w).all():
        raise PipelineError(f"column sample_weight: row_id {usable['row_id'].iloc[int(np.argmin(sample_w))]} has "
                            "a negative or non-finite weight; expected weights >= 0")
    cw = class_weights(labels)
    sampler = None
    if cfg.rebalance == "sampler":  # balance by drawing, so the loss stays unweighted by class
        gen = torch.Generator().manual_seed(cfg.seed)
        sampler = torch.utils.data.WeightedRandomSampler(cw[labels] * sample_w, len(labels), replacement=True,
                                                         generator=gen)
        sample_w = np.ones(len(labels))
    elif cfg.rebalance == "class_weights":
        sample_w = sample_w * cw[labels]
    log.info("resnet (%s profile, %s, weights %s, %d px): %d train rows used %s, %d val rows on %s %s, "
             "%d CPU threads", cfg.profile, cfg.arch, cfg.weights, cfg.image_size, len(usable), rows,
             len(val_frame), runtime.device, runtime.precision, threads)

    seed_everything(cfg.seed)
    net = build_net(cfg.arch, weights_file).to(runtime.device)
    if runtime.device == "cuda":
        net = net.to(memory_format=torch.channels_last)
    train_ds = ImageRows(image_paths(usable), labels, sample_w, build_transform(cfg.image_size, cfg.augment),
                         cfg.image_size)
    val_labels = frame_labels(val_frame)
    val_ds = ImageRows(image_paths(val_frame), val_labels, np.ones(len(val_frame)),
                       build_transform(cfg.image_size, None), cfg.image_size)
    train_loader = _loader(train_ds, cfg.batch_size, cfg, runtime, shuffle=True, sampler=sampler)
    val_loader = _loader(val_ds, cfg.eval_batch_size, cfg, runtime)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate,
                                                    total_steps=cfg.epochs * len(train_loader), pct_start=0.2)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.precision == "fp16")
    live = _live(live_dir)
    history: list[dict] = []
    best_f1, best_state, stale = -1.0, None, 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        loss_sum, weight_sum = 0.0, 0.0
        for x, y, w in tqdm(train_loader, desc=f"resnet epoch {epoch}", leave=False):
            x, y, w = x.to(runtime.device, non_blocking=True), y.to(runtime.device), w.to(runtime.device)
            if runtime.device == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(runtime.device, dtype=runtime.autocast_dtype, enabled=runtime.autocast_dtype is not None):
                per_row = torch.nn.functional.cross_entropy(net(x).float(), y, reduction="none")
            loss = (per_row * w).sum() / w.sum().clamp_min(1e-12)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float((per_row * w).sum().detach())
            weight_sum += float(w.sum())
        logits = _logits(net, val_loader, runtime, "resnet val")
        val_loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)))
        entry = {"epoch": epoch, "train_loss": round(loss_sum / max(weight_sum, 1e-12), 6),
                 "val_loss": round(val_loss, 6),
                 **scores(indices_to_codes(val_labels), indices_to_codes(logits.argmax(axis=1)))}
        history.append(entry)
        log.info("resnet epoch %d: train loss %.4f, val loss %.4f, val weighted F1 %.4f", epoch,
                 entry["train_loss"], entry["val_loss"], entry["weighted_f1"])
        if live is not None:
            live.log_metric("train/loss", entry["train_loss"])
            live.log_metric("val/loss", entry["val_loss"])
            for m in ("weighted_f1", "macro_f1", "accuracy"):
                live.log_metric(f"val/{m}", entry[m])
            live.log_metric("learning_rate", optimizer.param_groups[0]["lr"])
            live.next_step()
        if entry["weighted_f1"] > best_f1:
            best_f1, best_state, stale = entry["weighted_f1"], copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                log.info("resnet: early stop after epoch %d (no val improvement for %d epochs)", epoch, stale)
                break
    if live is not None:
        live.end()
    net.load_state_dict(best_state)
    rows["val_rows"] = int(len(val_frame))
    rows["best_epoch"] = int(max(history, key=lambda h: h["weighted_f1"])["epoch"])
    rows["epochs_run"] = len(history)
    return ResnetModel(net=net.eval(), config=cfg, history=history, rows=rows)


# ------------------------------------------------------------------------------------ inference

def predict_proba(model: ResnetModel, frame: pd.DataFrame) -> np.ndarray:
    """(n, 27) class probabilities in canonical order from the cleaned images (``clean_path``)."""
    cfg = model.config
    if len(frame) == 0:
        return np.zeros((0, N_CLASSES))
    device = next(model.net.parameters()).device
    runtime = Runtime("cpu", "fp32") if device.type == "cpu" else choose_runtime("cuda", cfg.precision)
    ds = ImageRows(image_paths(frame), np.zeros(len(frame), dtype=np.int64), np.ones(len(frame)),
                   build_transform(cfg.image_size, None), cfg.image_size)
    return softmax_proba(_logits(model.net, _loader(ds, cfg.eval_batch_size, cfg, runtime), runtime, "resnet predict"))


# --------------------------------------------------------------------------------- persistence

def save(model: ResnetModel, directory: str | Path) -> None:
    """``weights.pt`` (state dict) and ``resnet.json`` (config, val history, row accounting); atomic."""
    with atomic_path(directory, is_dir=True) as tmp:
        torch.save({k: v.cpu() for k, v in model.net.state_dict().items()}, tmp / "weights.pt")
        write_meta(tmp / "resnet.json", model.config, model.history, model.rows)


def load(directory: str | Path) -> ResnetModel:
    """Load a model saved by :func:`save` onto CUDA when present, else CPU."""
    directory = Path(directory)
    meta = read_meta(directory / "resnet.json", directory / "weights.pt", "ResNet", NAME)
    cfg = parse_section(ResnetConfig, meta["config"], NAME, source=str(directory / "resnet.json"))
    set_threads(cfg.num_threads)  # predictions with the numerics the model was trained with, on any machine
    net = build_net(cfg.arch)
    net.load_state_dict(torch.load(directory / "weights.pt", map_location="cpu", weights_only=True))
    runtime = choose_runtime("auto", "auto")
    return ResnetModel(net=net.to(runtime.device).eval(), config=cfg, history=meta.get("history", []),
                       rows=meta.get("rows", {}))

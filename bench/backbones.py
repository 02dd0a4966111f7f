"""Cost of every backbone family on this CPU: training and inference samples/s and seconds per epoch.

Why: choosing a backbone (``-S camembert.full.model=...`` / ``-S resnet50.full.arch=...``) on a CPU
box means knowing what one epoch of the real catalog's train split (68,000 rows) costs before
starting it. Every figure is the library's own code at work, under the pipeline's numeric policy
(:func:`rakuten.core.numerics.configure_torch`), fp32:

* text: the network of :func:`rakuten.models.camembert.encoder.build_model` (the family's pretrained
  weights when on disk; else the library's scratch config of that family at its published size, with
  the embedding at the published vocabulary: the cost does not depend on the weights), the pipeline's
  tokenisation and :class:`~rakuten.models.camembert.data.EncodedTexts`, and the training step of the
  stage's own Hugging Face ``Trainer`` (:func:`rakuten.models.camembert.training.build_trainer`:
  its ``compute_loss`` and its AdamW). Texts are the generated catalog's ``text_light`` (title +
  description, cleaned as text_clean does); batches are length-grouped as the Trainer draws them and
  padded by its collator; the timed batches are those at evenly spaced quantiles of padded length,
  so their mean cost stands for an epoch's. Inference: :func:`rakuten.models.camembert.model.predict_proba`.
* images: the network of :func:`rakuten.models.resnet50.training.network` (backbone factory; ImageNet
  weights when on disk), the generated catalog's JPEGs through the stage's datasets and loader
  (decode + augmentations) and its training step (:func:`rakuten.models.resnet50.training.train_step`:
  AdamW, one-cycle schedule). Inference: :func:`rakuten.models.resnet50.model.predict_proba`.

Timed: 1 warm-up step, then ``--steps`` training steps (batches built before the timing) and
``--infer-batches`` batches of inference, at batch 4 (the demo configs at their own batch). One
torch thread by default, as params.yaml's ``num_threads``; ``--thread-check`` times camembert-base
steps at 1 and 2 threads in the same run, because on a box shared with other processes two threads
can lose to one. Prints a table, writes ``reports/bench/backbones.json``.

    python bench/backbones.py                       # every family, ~12 minutes on 2 shared cores
    python bench/backbones.py --only resnet50,camembert-base --batch 8 --threads 2
    python bench/backbones.py --tiny --out /tmp/b.json   # tiny members of each family: a check of the code
    python bench/backbones.py --doc-table           # docs/backbones.md's table from this JSON
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks use weights on disk or random init, never a download

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from measure import cpu_s, peak_rss_mib  # noqa: E402

import rakuten  # noqa: E402,F401  pins the numeric environment before torch runs anything
from rakuten.contracts.classes import CLASS_CODES  # noqa: E402
from rakuten.core.errors import PipelineError  # noqa: E402
from rakuten.core.io import write_json  # noqa: E402
from rakuten.core.logs import setup_logging  # noqa: E402
from rakuten.models.camembert import model as text_model  # noqa: E402
from rakuten.models.camembert.config import SCRATCH, CamembertConfig, ScratchArchitecture  # noqa: E402
from rakuten.models.camembert.data import EncodedTexts, encode  # noqa: E402
from rakuten.models.camembert.encoder import build_model  # noqa: E402
from rakuten.models.camembert.training import build_trainer  # noqa: E402
from rakuten.models.resnet50 import model as image_model  # noqa: E402
from rakuten.models.resnet50.config import ResnetConfig  # noqa: E402
from rakuten.models.resnet50.data import ImageRows, build_transform, make_loader  # noqa: E402
from rakuten.models.resnet50.frame import image_paths  # noqa: E402
from rakuten.models.resnet50.training import StepParts, network, optimiser, train_step  # noqa: E402
from rakuten.runtime.torch_setup import Runtime, frame_labels, set_threads  # noqa: E402

log = logging.getLogger("bench.backbones")
TRAIN_ROWS = 68000  # the real catalog's train split (84,916 labelled rows x 0.8)
MAX_TOKENS = 256  # the full profile's max_length
CPU = Runtime("cpu", "fp32")


# ------------------------------------------------------------------------------------ families


@dataclass(frozen=True)
class Family:
    """One backbone: how the pipeline names it (``hub_id``), its random-init architecture, its tiny stand-in."""

    key: str  # name in the JSON and the tables
    kind: str  # "text" | "image"
    hub_id: str  # HF id (text) or torchvision/timm name (image): the value of -S ...model= / ...arch=
    scratch: ScratchArchitecture | None = None  # text: the family at its published size (vocab_size: its own)
    tiny: str = ""  # image: the small member of the family that --tiny measures instead
    demo: bool = False  # a demo config of the pipeline (params.yaml's defaults), not a selectable backbone
    aliases: tuple[str, ...] = ()  # other hub ids of the same weights, also looked for on disk


def _arch(model_type: str, hidden: int, layers: int, heads: int, ffn: int, vocab: int) -> ScratchArchitecture:
    return ScratchArchitecture(model_type, vocab, hidden, layers, heads, ffn)


FAMILIES: tuple[Family, ...] = (
    Family(
        "camembert-base",
        "text",
        "camembert-base",
        _arch("camembert", 768, 12, 12, 3072, 32005),
        aliases=("almanach/camembert-base",),
    ),
    Family(
        "camembert-large",
        "text",
        "camembert/camembert-large",
        _arch("camembert", 1024, 24, 16, 4096, 32005),
        aliases=("almanach/camembert-large",),
    ),
    Family("xlm-roberta-base", "text", "FacebookAI/xlm-roberta-base", _arch("xlm-roberta", 768, 12, 12, 3072, 250002)),
    Family("flaubert-base", "text", "flaubert/flaubert_base_cased", _arch("flaubert", 768, 12, 12, 3072, 68729)),
    Family("camembertav2-base", "text", "almanach/camembertav2-base", _arch("deberta-v2", 768, 12, 12, 3072, 32768)),
    Family("resnet50", "image", "resnet50", tiny="resnet18"),
    Family("convnext_tiny", "image", "convnext_tiny", tiny="test_convnext"),
    Family("convnext_base", "image", "convnext_base", tiny="test_convnext"),
    Family("efficientnet_b0", "image", "efficientnet_b0", tiny="test_efficientnet"),
    Family("vit_base_patch16_224", "image", "vit_base_patch16_224", tiny="test_vit"),
    Family(
        "swin_tiny_patch4_window7_224", "image", "swin_tiny_patch4_window7_224", tiny="swin_tiny_patch4_window7_224"
    ),
    Family("vit_base_patch16_siglip_224", "image", "vit_base_patch16_siglip_224", tiny="test_vit"),
)
DEMO_FAMILIES: tuple[Family, ...] = (
    Family("camembert-demo-scratch-2x128", "text", SCRATCH, demo=True),
    Family("resnet18-demo-32px", "image", "resnet18", demo=True),
)
#: the tiny text architecture of --tiny (same family, 2 layers x 32)
TINY_TEXT = {"vocab_size": 1000, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}


def family(key: str) -> Family:
    for fam in FAMILIES + DEMO_FAMILIES:
        if fam.key == key:
            return fam
    raise PipelineError(
        f"unknown backbone family {key!r}; expected one of {', '.join(f.key for f in FAMILIES + DEMO_FAMILIES)}"
    )


def params_m(net: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in net.parameters()) / 1e6, 1)


# ------------------------------------------------------------------------------------- catalog


def catalog_frame(
    rows: int, out_dir: Path | None = None, image_size: int = 64, seed: int = 42, n_jobs: int = 1
) -> pd.DataFrame:
    """A generated catalog's first ``rows`` labelled rows as a model frame: ``text_light`` (title +
    description cleaned as text_clean does, no translation) and, with ``out_dir``, the JPEGs written
    there (``clean_path``, every image readable and kept with weight 1)."""
    from rakuten.data.sample.config import SampleConfig
    from rakuten.text.cleaning import clean_text, concat_fields, truncate_words

    cfg = SampleConfig(
        n_train=max(rows, 2 * len(CLASS_CODES)), n_test=0, seed=seed, image_size=image_size, n_jobs=n_jobs
    )
    if out_dir is None:
        from rakuten.data.sample.tables import generate_tables

        x, labels, *_ = generate_tables(cfg)
        frame = x.assign(prdtypecode=labels, row_id=np.arange(len(x)))
    else:
        from rakuten.data.ingest import load_catalog
        from rakuten.data.sample.generate import write_sample

        write_sample(cfg, out_dir)
        frame, _ = load_catalog(out_dir)
        frame = frame.assign(clean_path=frame["image_path"].astype(str), readable=True, keep_for_train=True)
        frame = frame.assign(sample_weight=1.0)
    text = [
        truncate_words(clean_text(concat_fields(a, b)), 10000)[0]
        for a, b in zip(frame["designation"].tolist(), frame["description"].tolist())
    ]
    return frame.assign(text_light=text, split="train").iloc[:rows].reset_index(drop=True)


def length_stats(lengths: np.ndarray, cap: int) -> dict:
    """Token lengths after truncation at ``cap``: mean, median, p95, max, share of rows cut at the cap."""
    return {
        "rows": int(len(lengths)),
        "cap": cap,
        "mean": round(float(lengths.mean()), 1),
        "p50": int(np.percentile(lengths, 50)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "share_at_cap": round(float((lengths >= cap).mean()), 4),
    }


def representative_batches(lengths: np.ndarray, batch_size: int, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(warm-up batch, ``n`` timed batches) of the Trainer's length-grouped order (``LengthGroupedSampler``),
    the timed ones at evenly spaced quantiles of their longest row: their mean cost stands for an epoch's."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sampler = LengthGroupedSampler(batch_size, lengths=lengths.tolist(), generator=torch.Generator().manual_seed(0))
    order = np.fromiter(iter(sampler), dtype=np.int64, count=len(lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    ranked = sorted(batches, key=lambda b: int(lengths[b].max()))
    picks = [ranked[min(len(ranked) - 1, int((2 * k + 1) * len(ranked) / (2 * n)))] for k in range(n)]
    return ranked[len(ranked) // 2], picks


# ---------------------------------------------------------------------------------- CPU timing


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall s, CPU s of this process) of ``fn()``."""
    c0, t0 = cpu_s(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_s() - c0


def cpu_measure(step: Callable, warm: Any, batches: list, batch_size: int, infer: Callable[[], int]) -> dict:
    """``step(warm)`` once (optimiser state, buffers), then ``step`` on each of ``batches`` timed, then
    ``infer()`` (returns the rows it predicted) timed."""
    step(warm)
    train_wall, train_cpu = _timed(lambda: [step(b) for b in batches])
    rows = [0]
    infer_wall, _ = _timed(lambda: rows.__setitem__(0, infer()))
    steps = len(batches)
    return {
        "batch_size": batch_size,
        "train_steps": steps,
        "train_samples_per_s": round(steps * batch_size / train_wall, 2),
        "train_step_s": round(train_wall / steps, 3),
        "cpu_utilisation": round(train_cpu / train_wall, 2),
        "infer_rows": rows[0],
        "infer_samples_per_s": round(rows[0] / infer_wall, 2),
    }


# --------------------------------------------------------------------------------------- text


def text_config(fam: Family, tiny: bool, batch: int) -> tuple[CamembertConfig, str]:
    """The stage's config for ``fam`` (demo: params.yaml's demo profile) and how its weights are initialised."""
    cfg = CamembertConfig(device="cpu", num_threads=torch.get_num_threads(), eval_batch_size=batch)
    if fam.demo:
        return cfg, "random (the demo profile trains from scratch)"
    arch = replace(fam.scratch, **TINY_TEXT) if tiny else fam.scratch
    cfg = cfg.with_active(model=SCRATCH, local_dir="", scratch=arch, max_length=MAX_TOKENS, batch_size=batch)
    for hub_id in () if tiny else (fam.hub_id, *fam.aliases):
        try:
            path = text_model.resolve_weights(cfg.with_active(model=hub_id))
        except PipelineError:
            continue
        return cfg.with_active(model=hub_id), f"pretrained ({path})"
    return cfg, "random (weights not on this machine)"


def text_trainer(fam: Family, frame: pd.DataFrame, tiny: bool, batch: int, out_dir: str):
    """(config, init, the stage's Trainer on ``frame``'s texts, the encoded dataset) of ``fam``."""
    texts = frame["text_light"].tolist()
    cfg, init = text_config(fam, tiny, batch)
    tokenizer, model = build_model(cfg, texts)
    if cfg.model == SCRATCH and not (tiny or fam.demo):  # the published embedding size (XLM-R: 250k rows)
        model.resize_token_embeddings(fam.scratch.vocab_size)
    data = EncodedTexts(encode(tokenizer, texts, cfg.max_length), frame_labels(frame))
    trainer = build_trainer(cfg, CPU, model, tokenizer, (data, data), out_dir)
    trainer.create_optimizer()
    return cfg, init, trainer, data


def text_step(trainer, runtime: Runtime = CPU) -> Callable[[dict], None]:
    """One optimiser step of the stage's Trainer on a collated batch: its loss (``compute_loss``: the
    class-weighted loss when configured), backward, its AdamW."""
    trainer.model.train()

    def step(batch: dict) -> None:
        batch = {k: v.to(runtime.device, non_blocking=True) for k, v in batch.items()}
        with runtime.autocast():
            loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return step


def bench_text_cpu(fam: Family, frame: pd.DataFrame, tiny: bool, batch: int, steps: int, infer_batches: int) -> dict:
    """One text family: the Trainer's step on length-grouped, dynamically padded batches; library inference."""
    with tempfile.TemporaryDirectory(prefix="bench-backbones-") as out_dir:
        cfg, init, trainer, data = text_trainer(fam, frame, tiny, batch, out_dir)
        lengths = np.array([len(ids) for ids in data.encodings["input_ids"]])
        warm, timed = representative_batches(lengths, batch, steps)
        collate = trainer.data_collator
        batches = [collate([data[int(i)] for i in idx]) for idx in timed]
        fitted = text_model.CamembertModel(model=trainer.model, tokenizer=trainer.processing_class, config=cfg)
        rows = frame.iloc[: infer_batches * batch]
        res = cpu_measure(
            text_step(trainer),
            collate([data[int(i)] for i in warm[:2]]),
            batches,
            batch,
            lambda: len(text_model.predict_proba(fitted, rows)),
        )
    return {
        "init": init,
        "attention": trainer.model.config._attn_implementation,
        "tokenizer": f"{'BPE trained on the catalog texts' if cfg.model == SCRATCH else 'pretrained'} "
        f"({len(trainer.processing_class)} tokens)",
        "params_m": params_m(trainer.model),
        "max_length": cfg.max_length,
        "token_length": length_stats(lengths, cfg.max_length),
        "padded_lengths_timed": [int(b["input_ids"].shape[1]) for b in batches],
        **res,
    }


# -------------------------------------------------------------------------------------- images


def image_config(fam: Family, tiny: bool, batch: int, size: int | None) -> tuple[ResnetConfig, Path | None, str]:
    """The stage's config for ``fam`` (demo: params.yaml's demo profile), its weights file and their origin."""
    cfg = ResnetConfig(device="cpu", num_threads=torch.get_num_threads(), eval_batch_size=batch)
    if fam.demo:
        return cfg, None, "random (the demo profile trains from scratch)"
    arch = fam.tiny if tiny else fam.hub_id
    cfg = cfg.with_active(arch=arch, weights="none", image_size=size or 224, batch_size=batch, epochs=1)
    if not tiny:
        try:
            weights = image_model.resolve_weights(cfg.with_active(weights="pretrained"))
            return cfg.with_active(weights="pretrained"), weights, f"pretrained ({weights})"
        except PipelineError:
            pass
    return cfg, None, "random (weights not on this machine)"


def bench_image_cpu(
    fam: Family, frame: pd.DataFrame, tiny: bool, batch: int, steps: int, infer_batches: int, size=None
):
    """One image family: the stage's network, datasets, loader and training step; library inference."""
    cfg, weights, init = image_config(fam, tiny, batch, size)
    net, norm = network(cfg, CPU, weights)
    train_ds = ImageRows(
        image_paths(frame),
        frame_labels(frame),
        np.ones(len(frame)),
        build_transform(cfg.image_size, cfg.augment, norm),
        cfg.image_size,
    )
    loader = make_loader(train_ds, batch, cfg, CPU, shuffle=True)
    if len(loader) < steps + 1:
        raise PipelineError(f"{fam.key}: {len(frame)} rows make {len(loader)} batches of {batch}; need {steps + 1}")
    optimizer, scheduler, scaler = optimiser(net, cfg, CPU, len(loader))
    parts = StepParts(net, optimizer, scheduler, scaler, CPU)
    it = iter(loader)
    warm, batches = next(it), [next(it) for _ in range(steps)]  # decoded and augmented before the timing
    fitted = image_model.ResnetModel(net=net, config=cfg)
    rows = frame.iloc[: infer_batches * batch]
    res = cpu_measure(
        lambda b: train_step(parts, *b), warm, batches, batch, lambda: len(image_model.predict_proba(fitted, rows))
    )
    return {"init": init, "arch": cfg.arch, "params_m": params_m(net), "image_size": cfg.image_size, **res}


# --------------------------------------------------------------------------------- thread check


def thread_check(frame: pd.DataFrame, batch: int, thread_counts: tuple[int, ...]) -> dict:
    """Seconds per camembert-base training step at each torch thread count (2 timed steps each):
    on a 2-core box shared with other processes, two threads can lose to one (threads that wait
    for a descheduled sibling at every operation)."""
    fam = family("camembert-base")
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as out_dir:
        _, _, trainer, data = text_trainer(fam, frame, False, batch, out_dir)
        lengths = np.array([len(ids) for ids in data.encodings["input_ids"]])
        warm, timed = representative_batches(lengths, batch, 2)
        collate, step = trainer.data_collator, text_step(trainer)
        batches = [collate([data[int(i)] for i in idx]) for idx in timed]
        out = {
            "family": fam.key,
            "batch_size": batch,
            "padded_lengths": [int(b["input_ids"].shape[1]) for b in batches],
        }
        for n in thread_counts:
            set_threads(n)
            step(collate([data[int(i)] for i in warm[:2]]))
            wall, cpu = _timed(lambda: [step(b) for b in batches])
            out[f"threads_{n}"] = {
                "train_step_s": round(wall / len(batches), 2),
                "cpu_utilisation": round(cpu / wall, 2),
            }
    return out


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated family keys (default: all + the demo configs)")
    parser.add_argument("--batch", type=int, default=4, help="batch of the real-size families")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--infer-batches", type=int, default=2, help="batches of inference timed")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1, the pipeline's num_threads)")
    parser.add_argument(
        "--thread-check", default="1,2", help="thread counts of a camembert-base step-time comparison ('' to skip)"
    )
    parser.add_argument("--text-rows", type=int, default=10000, help="catalog rows whose texts are tokenised")
    parser.add_argument("--tiny", action="store_true", help="tiny members of each family at 32 px: a code check")
    parser.add_argument("--out", default="reports/bench/backbones.json")
    parser.add_argument(
        "--doc-table", action="store_true", help="print docs/backbones.md's table from reports/bench/backbones.json"
    )
    return parser.parse_args(argv)


def bench_family(fam: Family, args, frames: dict[str, pd.DataFrame]) -> dict:
    """One family's figures (an ``error`` entry if it fails: the others are still measured)."""
    demo_text, demo_image = CamembertConfig().demo, ResnetConfig().demo
    batch = (demo_text.batch_size if fam.kind == "text" else demo_image.batch_size) if fam.demo else args.batch
    size = 32 if args.tiny and fam.kind == "image" and not fam.demo else None
    log.info("%s: %s batch %d", fam.key, fam.kind, batch)
    try:
        if fam.kind == "text":
            res = bench_text_cpu(fam, frames["text"], args.tiny, batch, args.steps, args.infer_batches)
        else:
            res = bench_image_cpu(fam, frames["image"], args.tiny, batch, args.steps, args.infer_batches, size)
    except Exception as exc:  # noqa: BLE001 - one family failing must not lose the others' figures
        log.exception("%s failed", fam.key)
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    rows = (demo_text.max_train_rows if fam.kind == "text" else demo_image.max_train_rows) if fam.demo else TRAIN_ROWS
    res["epoch_rows"] = rows
    res["epoch_s_estimate"] = round(rows / res["train_samples_per_s"], 1)
    if fam.demo:
        res["epoch_s_estimate_68k_rows"] = round(TRAIN_ROWS / res["train_samples_per_s"], 1)
    return res


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.doc_table:
        sys.stdout.write(doc_table() + "\n")
        return
    setup_logging()
    threads = set_threads(args.threads)
    fams = [family(k) for k in ([k for k in args.only.split(",") if k] or [f.key for f in FAMILIES + DEMO_FAMILIES])]
    start = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "cpu-tiny" if args.tiny else "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "precision": "fp32",
        "numerics": "rakuten.core.numerics.configure_torch (oneDNN off, deterministic kernels)",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "epoch_rows": TRAIN_ROWS,
        "method": f"library code: 1 warm-up + {args.steps} timed training steps, {args.infer_batches} batches of "
        "predict_proba; text: the stage's Trainer step on length-grouped batches at padded-length quantiles; "
        "images: the stage's datasets, loader and train_step on generated JPEGs",
        "families": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        frames = catalog_frames(fams, args, Path(tmp))
        report["text_rows"] = len(frames.get("text", ()))
        for fam in fams:
            t0 = time.perf_counter()
            res = bench_family(fam, args, frames)
            report["families"][fam.key] = {
                "kind": fam.kind,
                "hub_id": fam.hub_id,
                "demo": fam.demo,
                "wall_s": round(time.perf_counter() - t0, 1),
                **res,
            }
        counts = tuple(int(n) for n in args.thread_check.split(",") if n)
        if counts and "text" in frames and not args.tiny:
            log.info("thread check: camembert-base steps at %s threads", counts)
            report["thread_check"] = thread_check(frames["text"], args.batch, counts)
            set_threads(threads)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report["peak_rss_mib"] = peak_rss_mib()
    print_table(report)
    write_json(report, args.out)
    log.info("wrote %s", args.out)


def catalog_frames(fams: list[Family], args, tmp: Path) -> dict[str, pd.DataFrame]:
    """The generated catalog the families read: texts (``--text-rows``), and JPEGs for enough batches."""
    frames = {}
    if any(f.kind == "text" for f in fams):
        frames["text"] = catalog_frame(args.text_rows)
    images = [f for f in fams if f.kind == "image"]
    if images:
        batch = max(ResnetConfig().demo.batch_size if f.demo else args.batch for f in images)
        rows = max(batch * (args.steps + 1), args.infer_batches * batch)
        frames["image"] = catalog_frame(rows, tmp / "catalog", image_size=64 if args.tiny else 224)
    return frames


def select_flags(fam: Family) -> str:
    """How the pipeline selects ``fam`` (the demo configs are what `dvc repro` runs by default)."""
    if fam.demo:
        return "default profile (`dvc repro`)"
    if fam.kind == "text":
        return f"`-S camembert.profile=full -S camembert.full.model={fam.hub_id}`"
    return f"`-S resnet50.profile=full -S resnet50.full.arch={fam.hub_id}`"


def doc_table(cpu_path: str = "reports/bench/backbones.json") -> str:
    """The markdown table of docs/backbones.md from the report: every figure comes from the JSON."""
    import json

    path = Path(cpu_path)
    cpu = json.loads(path.read_text(encoding="utf-8")).get("families", {}) if path.is_file() else {}
    head = "| family | params (M) | select with | CPU train samples/s | CPU s/epoch | CPU infer samples/s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for fam in FAMILIES + DEMO_FAMILIES:
        c = cpu.get(fam.key, {})
        if "error" in c or not c:
            cells = [c.get("error", "not measured yet")[:60], "", ""]
        else:
            cells = [str(c["train_samples_per_s"]), f"{c['epoch_s_estimate']:,.0f}", str(c["infer_samples_per_s"])]
        lines.append("| " + " | ".join([fam.key, str(c.get("params_m", "")), select_flags(fam), *cells]) + " |")
    return "\n".join(lines)


def print_table(report: dict) -> None:
    cols = (
        "family",
        "params_m",
        "batch_size",
        "train_samples_per_s",
        "epoch_s_estimate",
        "infer_samples_per_s",
        "cpu_utilisation",
        "init",
    )
    rows = []
    for key, r in report["families"].items():
        if "error" in r:
            rows.append([key, "error: " + r["error"][:80]] + [""] * (len(cols) - 2))
            continue
        rows.append([key] + [str(r.get(c, "")) for c in cols[1:-1]] + [r.get("init", "").split(" (")[0]])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    sys.stdout.write(
        f"backbones on {report['device']}: {report['torch_threads']} torch threads, {report['precision']}, "
        f"epoch = {report['epoch_rows']} rows (demo: its max_train_rows), load average "
        f"{report['load_average_at_start'][0]} -> {report['load_average_at_end'][0]}\n"
    )
    sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(cols, widths)) + "\n")
    for r in rows:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "\n")


if __name__ == "__main__":
    main()

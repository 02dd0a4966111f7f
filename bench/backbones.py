"""Cost of every backbone family on this CPU: training and inference samples/s and seconds per epoch.

Why: choosing a backbone (``-S camembert.full.model=...`` / ``-S resnet50.full.arch=...``) on a CPU
box means knowing what one epoch of the real catalog's train split (68,000 rows) costs before
starting it. Each family is built at its real size with random init (the cost does not depend on
the weights), fp32, under the pipeline's numeric policy (:func:`rakuten.core.numerics.configure_torch`:
oneDNN off, deterministic kernels, MKL's reproducible branch, as every stage runs). Timed: 3
training steps (AdamW, after a warm-up step on 2 rows) and 2 inference batches at batch 4 (batch 8
and 3 inference batches would not fit in ~12 minutes on a shared 2-core box). Texts are tokenised
from the generated catalog's ``text_light`` (title + description, what the stage reads) and padded
per batch (length-grouped batches; the timed batches are those at the 1/6, 1/2 and 5/6 quantiles of
padded length, so their mean cost stands for an epoch's); images are random 224 px tensors (JPEG
decoding, ~2 ms an image, is noise next to a step). One torch thread by default, as params.yaml's
``num_threads``: ``--thread-check`` times camembert-base steps at 1 and 2 threads in the same run,
because on a box shared with other processes two threads can lose to one. The two demo configs
the pipeline runs by default (CamemBERT scratch 2x128 at max_length 64, ResNet18 at 32 px) are
measured the same way at their own batch sizes. Prints a table, writes
``reports/bench/backbones.json``.

    python bench/backbones.py                       # every family, ~12 minutes on 2 shared cores
    python bench/backbones.py --only resnet50,camembert-base --batch 8 --threads 2
    python bench/backbones.py --tiny --out /tmp/b.json   # tiny configs: a seconds-long check of the code
    python bench/backbones.py --doc-table           # docs/backbones.md's table from this JSON + gpu.json

This module also holds what bench/deep.py's GPU mode shares with it: the family table, the model
builders and the length-grouped text batches.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks use weights on disk or random init, never a download

import numpy as np  # noqa: E402
import torch  # noqa: E402
from measure import cpu_s, peak_rss_mib  # noqa: E402

import rakuten  # noqa: E402,F401  pins the numeric environment before torch runs anything
from rakuten.contracts.classes import N_CLASSES  # noqa: E402
from rakuten.core.errors import PipelineError  # noqa: E402
from rakuten.core.io import write_json  # noqa: E402
from rakuten.core.logs import setup_logging  # noqa: E402

log = logging.getLogger("bench.backbones")
TRAIN_ROWS = 68000  # the real catalog's train split (84,916 labelled rows x 0.8)
MAX_TOKENS = 256  # the full profile's max_length
PAD_MULTIPLE = 8  # dynamic padding rounds lengths up to a multiple of 8 (tensor-core friendly, fewer shapes)


# ------------------------------------------------------------------------------------ families


@dataclass(frozen=True)
class Family:
    """One backbone: how the pipeline names it (``hub_id``), which library builds it, its batch sizes."""

    key: str  # name in the JSON and the tables
    kind: str  # "text" | "image"
    hub_id: str  # HF id (text) or timm/torchvision name (image): the value of -S ...model= / ...arch=
    source: str  # transformers | timm | torchvision
    gpu_batch: int  # training batch on the GPU (inference: twice this)
    demo: bool = False  # a demo config of the pipeline, not a selectable backbone
    image_size: int = 224
    max_length: int = MAX_TOKENS
    aliases: tuple[str, ...] = ()  # other hub ids of the same weights, also looked for on disk


FAMILIES: tuple[Family, ...] = (
    Family("camembert-base", "text", "camembert-base", "transformers", 128, aliases=("almanach/camembert-base",)),
    Family(
        "camembert-large",
        "text",
        "camembert/camembert-large",
        "transformers",
        64,
        aliases=("almanach/camembert-large",),
    ),
    Family("xlm-roberta-base", "text", "FacebookAI/xlm-roberta-base", "transformers", 128),
    Family("flaubert-base", "text", "flaubert/flaubert_base_cased", "transformers", 128),
    Family("camembertav2-base", "text", "almanach/camembertav2-base", "transformers", 128),
    Family("resnet50", "image", "resnet50", "torchvision", 256),
    Family("convnext_tiny", "image", "convnext_tiny", "timm", 256),
    Family("convnext_base", "image", "convnext_base", "timm", 256),
    Family("efficientnet_b0", "image", "efficientnet_b0", "timm", 256),
    Family("vit_base_patch16_224", "image", "vit_base_patch16_224", "timm", 256),
    Family("swin_tiny_patch4_window7_224", "image", "swin_tiny_patch4_window7_224", "timm", 256),
    Family("vit_base_patch16_siglip_224", "image", "vit_base_patch16_siglip_224", "timm", 256),
)
DEMO_FAMILIES: tuple[Family, ...] = (
    Family("camembert-demo-scratch-2x128", "text", "scratch", "transformers", 32, demo=True, max_length=64),
    Family("resnet18-demo-32px", "image", "resnet18", "torchvision", 64, demo=True, image_size=32),
)
DEMO_TRAIN_ROWS = {"camembert-demo-scratch-2x128": 8000, "resnet18-demo-32px": 2500}  # the demo's max_train_rows
TARGET_FAMILIES = ("camembert-base", "resnet50")  # the GPU targets are stated for these


def family(key: str) -> Family:
    for fam in FAMILIES + DEMO_FAMILIES:
        if fam.key == key:
            return fam
    raise PipelineError(
        f"unknown backbone family {key!r}; expected one of {', '.join(f.key for f in FAMILIES + DEMO_FAMILIES)}"
    )


def text_config(fam: Family, pad_id: int, tiny: bool, vocab_size: int | None = None):
    """The Hugging Face config of ``fam`` at its real size (``tiny``: 2 layers x 32, same class).

    Real vocabularies are kept (XLM-R's 250k-row embedding dominates its optimiser step); the
    trained BPE's ids all fall below every one of them.
    """
    from transformers import CamembertConfig, DebertaV2Config, FlaubertConfig, XLMRobertaConfig

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else {}
    common = dict(num_labels=N_CLASSES, pad_token_id=pad_id)
    if fam.key == "camembert-base":
        size = small or dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        return CamembertConfig(vocab_size=32005, max_position_embeddings=514, type_vocab_size=1, **common, **size)
    if fam.key == "camembert-large":
        size = small or dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        return CamembertConfig(vocab_size=32005, max_position_embeddings=514, type_vocab_size=1, **common, **size)
    if fam.key == "xlm-roberta-base":
        size = small or dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        return XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, **common, **size)
    if fam.key == "flaubert-base":
        size = dict(emb_dim=32, n_layers=2, n_heads=2) if tiny else dict(emb_dim=768, n_layers=12, n_heads=12)
        return FlaubertConfig(
            vocab_size=68729, max_position_embeddings=512, pad_index=pad_id, num_labels=N_CLASSES, **size
        )
    if fam.key == "camembertav2-base":  # DeBERTa-v2/v3 architecture, CamemBERTa-v2's published sizes
        size = small or dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        return DebertaV2Config(
            vocab_size=32768,
            max_position_embeddings=1024,
            relative_attention=True,
            position_buckets=256,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            position_biased_input=False,
            type_vocab_size=0,
            max_relative_positions=-1,
            **common,
            **size,
        )  # (the class defaults are xlarge)
    if fam.key.startswith("camembert-demo"):  # params.yaml's demo: scratch 2x128, 4 heads, 512 FFN
        return CamembertConfig(
            vocab_size=vocab_size,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=fam.max_length + 2,
            type_vocab_size=1,
            **common,
        )
    raise PipelineError(f"{fam.key}: not a text family")


def _pretrained_dir(*hub_ids: str) -> str | None:
    """Directory of the first of ``hub_ids`` whose weights are on disk (models/pretrained/, HF cache), else None."""
    from rakuten.runtime.pretrained import resolve_hf

    for hub_id in hub_ids:
        try:
            return resolve_hf(hub_id)
        except (PipelineError, OSError, ValueError):
            continue
    return None


def build_text(
    fam: Family, tokenizer_pad_id: int, tiny: bool = False, attention: str = "sdpa", vocab_size: int | None = None
) -> tuple[torch.nn.Module, dict]:
    """(sequence classifier, info): pretrained weights when on disk, else random init at real size.

    ``attention``: ``sdpa`` (fused kernels) where the architecture supports it, else ``eager``;
    ``info`` says which was used and why.
    """
    from transformers import AutoModelForSequenceClassification

    path = None if (tiny or fam.demo) else _pretrained_dir(fam.hub_id, *fam.aliases)
    info: dict[str, Any] = {"init": f"pretrained ({path})" if path else "random (weights not on this machine)"}
    for impl in dict.fromkeys((attention, "eager")):
        try:
            if path:
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=N_CLASSES, ignore_mismatched_sizes=True, attn_implementation=impl
                )
            else:
                model = AutoModelForSequenceClassification.from_config(
                    text_config(fam, tokenizer_pad_id, tiny, vocab_size), attn_implementation=impl
                )
        except ValueError as exc:  # "does not support an attention implementation through sdpa"
            if impl == "eager":
                raise
            info["attention_note"] = str(exc).split(". ")[0][:160]
            continue
        info["attention"] = model.config._attn_implementation
        return model, info
    raise PipelineError(f"{fam.key}: no attention implementation could be built")


def timm_pretrained_file(arch: str) -> Path | None:
    """timm's default weights of ``arch`` when on disk (``timm/<tag>`` in models/pretrained or the HF cache)."""
    import timm

    try:
        hub_id = timm.models.get_pretrained_cfg(arch).hf_hub_id
    except (AttributeError, RuntimeError, KeyError):
        return None
    path = _pretrained_dir(hub_id) if hub_id else None
    if path is None:
        return None
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (Path(path) / name).is_file():
            return Path(path) / name
    return None


def build_image(fam: Family, tiny: bool = False, image_size: int | None = None) -> tuple[torch.nn.Module, dict]:
    """(classifier with a 27-class head, info): ImageNet weights when on disk, else random init.

    ``tiny``: the same architecture at small width/depth where timm allows it (a code-path check).
    """
    size = image_size or fam.image_size
    if fam.source == "torchvision":
        import torchvision

        net = torchvision.models.get_model(fam.hub_id, weights=None)
        init = "random (weights not on this machine)"
        if not (tiny or fam.demo):
            from rakuten.runtime.pretrained import resolve_torchvision

            try:
                weights = resolve_torchvision(fam.hub_id, "imagenet")
                net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
                init = f"pretrained ({weights})"
            except PipelineError:
                pass
        net.fc = torch.nn.Linear(net.fc.in_features, N_CLASSES)
        return net, {"init": init, "library": "torchvision"}
    import timm

    kwargs: dict[str, Any] = {}
    if any(fam.hub_id.startswith(p) for p in ("vit_", "swin_")) and size != 224:
        kwargs["img_size"] = size
    if tiny:
        kwargs.update(_TINY_TIMM.get(fam.hub_id.split("_")[0], {}))
    weights = None if (tiny or fam.demo) else timm_pretrained_file(fam.hub_id)
    if weights is not None:
        net = timm.create_model(
            fam.hub_id, pretrained=True, num_classes=N_CLASSES, pretrained_cfg_overlay={"file": str(weights)}, **kwargs
        )
        init = f"pretrained ({weights})"
    else:
        net = timm.create_model(fam.hub_id, pretrained=False, num_classes=N_CLASSES, **kwargs)
        init = "random (weights not on this machine)"
    return net, {"init": init, "library": f"timm {timm.__version__}"}


# narrow/shallow variants for the code-path checks (same classes and forward code as the real ones)
_TINY_TIMM: dict[str, dict] = {
    "convnext": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "vit": dict(embed_dim=64, depth=1, num_heads=2),
    "swin": dict(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)),
}


def params_m(net: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in net.parameters()) / 1e6, 1)


# --------------------------------------------------------------------------------- text inputs


def catalog_texts(rows: int, seed: int = 42) -> list[str]:
    """``text_light`` of a generated catalog's first ``rows`` rows: title + description cleaned as
    the text_clean stage does (HTML, encoding, whitespace; 10,000-character cap), no translation."""
    from rakuten.data.sample import SampleConfig, generate_tables
    from rakuten.text.cleaning import clean_text, concat_fields, truncate_words

    x, *_ = generate_tables(SampleConfig(n_train=max(rows, 2 * N_CLASSES), n_test=0, seed=seed, n_jobs=1))
    x = x.iloc[:rows]
    return [
        truncate_words(clean_text(concat_fields(a, b)), 10000)[0]
        for a, b in zip(x["designation"].tolist(), x["description"].tolist())
    ]


def text_tokenizer(fam: Family, texts: list[str], fallback=None):
    """(tokenizer, description): the family's own when on disk, else a BPE trained on ``texts``
    (rakuten.models.camembert.train_tokenizer, 32k vocabulary or what the texts support)."""
    path = None if fam.demo else _pretrained_dir(fam.hub_id, *fam.aliases)
    if path:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(path), f"pretrained ({path})"
        except (OSError, ValueError) as exc:
            log.warning("%s: tokenizer in %s unusable (%s); using the trained BPE", fam.key, path, exc)
    if fallback is not None:
        return fallback
    from rakuten.models.camembert import train_tokenizer

    vocab = 8000 if fam.demo else 32000
    tok = train_tokenizer(texts, vocab)
    return tok, f"BPE trained on the catalog texts (asked {vocab}, got {len(tok)} tokens)"


def token_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def length_stats(ids: list[list[int]], cap: int) -> dict:
    """Token lengths after truncation at ``cap``: mean, median, p95, max, share of rows cut at the cap."""
    lengths = np.array([len(x) for x in ids])
    return {
        "rows": int(len(lengths)),
        "cap": cap,
        "mean": round(float(lengths.mean()), 1),
        "p50": int(np.percentile(lengths, 50)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "share_at_cap": round(float((lengths >= cap).mean()), 4),
    }


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, mega: int = 50) -> list[np.ndarray]:
    """Index batches with little padding: shuffle, sort by length inside mega-batches of
    ``mega`` batches, cut, shuffle the batches (what HF's ``group_by_length`` sampler does).
    Incomplete last batches are dropped so every timed step has ``batch_size`` rows."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * mega):
        chunk = order[start : start + batch_size * mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def ids_matrix(ids: list[list[int]], cap: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows x ``cap`` token ids padded with ``pad_id``, lengths): batches are then slices, no Python loop."""
    lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
    mat = np.full((len(ids), cap), pad_id, dtype=np.int64)
    for i, row in enumerate(ids):
        mat[i, : len(row)] = row
    return mat, lengths


def padded_width(batch_lengths: np.ndarray) -> int:
    """Dynamic padding: the longest row rounded up to a multiple of 8 (tensor-core friendly, fewer shapes)."""
    return int(-(-int(batch_lengths.max()) // PAD_MULTIPLE) * PAD_MULTIPLE)


def pad_batch(mat, lengths, idx, fixed: int | None = None) -> dict:
    """input_ids / attention_mask of rows ``idx`` of :func:`ids_matrix`'s output (numpy or torch,
    CPU or GPU), padded to ``fixed`` tokens or dynamically (:func:`padded_width`, numpy lengths only:
    with tensors on a GPU the caller passes the width it computed on the host, so nothing syncs)."""
    width = fixed or padded_width(lengths[idx])
    input_ids = mat[idx, :width]
    if not torch.is_tensor(input_ids):
        input_ids = torch.from_numpy(np.ascontiguousarray(input_ids))
    lens = lengths[idx] if torch.is_tensor(lengths) else torch.from_numpy(lengths[idx])
    mask = (torch.arange(width, device=input_ids.device)[None, :] < lens[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": mask}


def representative_batches(batches: list[np.ndarray], lengths: np.ndarray, n: int) -> tuple[np.ndarray, list]:
    """(warm-up batch, ``n`` timed batches) at evenly spaced quantiles of padded length: with
    three steps, their mean cost stands for an epoch's better than three random batches'."""
    ranked = sorted(batches, key=lambda b: int(lengths[b].max()))
    picks = [ranked[min(len(ranked) - 1, int((2 * k + 1) * len(ranked) / (2 * n)))] for k in range(n)]
    return ranked[len(ranked) // 2], picks


# ---------------------------------------------------------------------------------- CPU timing


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall s, CPU s of this process) of ``fn()``."""
    c0, t0 = cpu_s(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_s() - c0


def cpu_measure(
    net: torch.nn.Module,
    make_batch: Callable[[int], tuple[dict, torch.Tensor]],
    batch_size: int,
    steps: int,
    infer_batches: int,
    forward: Callable,
) -> dict:
    """1 warm-up + ``steps`` AdamW training steps, then ``infer_batches`` forward passes (no grad).

    ``make_batch(k)``: k = -1 the warm-up batch (2 rows: it only has to allocate the optimiser state
    and the buffers, at a quarter of a step's cost), 0.. the timed ones (built outside the timing).
    """
    opt = torch.optim.AdamW(net.parameters(), lr=5e-5, weight_decay=0.01)
    net.train()

    def step(batch):
        inputs, y = batch
        loss = torch.nn.functional.cross_entropy(forward(net, inputs).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(make_batch(-1))
    batches = [make_batch(k) for k in range(steps)]
    train_wall, train_cpu = _timed(lambda: [step(b) for b in batches])
    net.eval()
    infer = [make_batch(k % max(steps, 1)) for k in range(infer_batches)]
    with torch.inference_mode():
        forward(net, make_batch(-1)[0])  # warm-up of the inference path
        infer_wall, _ = _timed(lambda: [forward(net, b[0]) for b in infer])
    train_rate = steps * batch_size / train_wall
    return {
        "batch_size": batch_size,
        "train_steps": steps,
        "train_samples_per_s": round(train_rate, 2),
        "train_step_s": round(train_wall / steps, 3),
        "cpu_utilisation": round(train_cpu / train_wall, 2),
        "infer_batches": infer_batches,
        "infer_samples_per_s": round(infer_batches * batch_size / infer_wall, 2),
    }


def _text_forward(net, inputs: dict) -> torch.Tensor:
    return net(**inputs).logits


def _image_forward(net, x: torch.Tensor) -> torch.Tensor:
    return net(x)


def text_inputs(fam: Family, texts: list[str], cache: dict) -> tuple[Any, str, list, np.ndarray, np.ndarray]:
    """(tokenizer, description, ids, id matrix, lengths) of ``fam``; one trained BPE and one
    tokenisation per distinct tokenizer and cap, shared by the families that use them."""
    key = "demo" if fam.demo else "real"
    if key not in cache:
        cache[key] = text_tokenizer(fam, texts)
    tokenizer, desc = text_tokenizer(fam, texts, fallback=cache[key])
    if (desc, fam.max_length) not in cache:
        ids = token_ids(tokenizer, texts, fam.max_length)
        cache[desc, fam.max_length] = (ids, *ids_matrix(ids, fam.max_length, tokenizer.pad_token_id))
    return (tokenizer, desc, *cache[desc, fam.max_length])


def bench_text_cpu(
    fam: Family, texts: list[str], tok_cache: dict, tiny: bool, batch: int, steps: int, infer_batches: int
) -> dict:
    """One text family on the CPU: real length distribution, dynamic padding, batch ``batch``."""
    tokenizer, tok_desc, ids, mat, lengths = text_inputs(fam, texts, tok_cache)
    pad_id = tokenizer.pad_token_id
    net, info = build_text(fam, pad_id, tiny=tiny, attention="sdpa", vocab_size=len(tokenizer))
    batches = length_grouped_batches(lengths, batch, seed=0)
    warm, timed = representative_batches(batches, lengths, steps)
    rng = np.random.default_rng(0)

    def make(k: int):
        idx = warm[:2] if k < 0 else timed[k]
        return pad_batch(mat, lengths, idx), torch.as_tensor(rng.integers(0, N_CLASSES, len(idx)))

    res = cpu_measure(net, make, batch, steps, infer_batches, _text_forward)
    res["padded_lengths_timed"] = [padded_width(lengths[b]) for b in timed]
    return {
        **info,
        "tokenizer": tok_desc,
        "params_m": params_m(net),
        "max_length": fam.max_length,
        "token_length": length_stats(ids, fam.max_length),
        **res,
    }


def bench_image_cpu(
    fam: Family, tiny: bool, batch: int, steps: int, infer_batches: int, image_size: int | None = None
) -> dict:
    """One image family on the CPU: random normalised tensors at the family's input size."""
    size = image_size or fam.image_size
    net, info = build_image(fam, tiny=tiny, image_size=size)
    gen = torch.Generator().manual_seed(0)

    def make(k: int):
        n = 2 if k < 0 else batch
        return (torch.randn(n, 3, size, size, generator=gen), torch.randint(0, N_CLASSES, (n,), generator=gen))

    res = cpu_measure(net, make, batch, steps, infer_batches, _image_forward)
    return {**info, "params_m": params_m(net), "image_size": size, **res}


def thread_check(texts: list[str], tok_cache: dict, batch: int, thread_counts: tuple[int, ...]) -> dict:
    """Seconds per camembert-base training step at each torch thread count (2 timed steps each):
    on a 2-core box shared with other processes, two threads can lose to one (threads that wait
    for a descheduled sibling at every operation)."""
    from rakuten.runtime.torch_setup import set_threads

    fam = family("camembert-base")
    tokenizer, _, _, mat, lengths = text_inputs(fam, texts, tok_cache)
    net, _ = build_text(fam, tokenizer.pad_token_id)
    _, timed = representative_batches(length_grouped_batches(lengths, batch, seed=0), lengths, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-5)
    out = {"family": fam.key, "batch_size": batch, "padded_lengths": [padded_width(lengths[b]) for b in timed]}
    for n in thread_counts:
        set_threads(n)

        def step(idx):
            loss = net(**pad_batch(mat, lengths, idx)).logits.float().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step(timed[0][:2])
        wall, cpu = _timed(lambda: [step(b) for b in timed])
        out[f"threads_{n}"] = {"train_step_s": round(wall / len(timed), 2), "cpu_utilisation": round(cpu / wall, 2)}
    return out


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated family keys (default: all + the demo configs)")
    parser.add_argument("--batch", type=int, default=4, help="batch of the real-size families")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--infer-batches", type=int, default=2, help="timed inference batches")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1, the pipeline's num_threads; see --thread-check)",
    )
    parser.add_argument(
        "--thread-check", default="1,2", help="thread counts of a camembert-base step-time comparison ('' to skip)"
    )
    parser.add_argument("--text-rows", type=int, default=10000, help="catalog rows whose token lengths are used")
    parser.add_argument("--tiny", action="store_true", help="tiny configs, 32 px: a quick check of the code path")
    parser.add_argument("--out", default="reports/bench/backbones.json")
    parser.add_argument(
        "--doc-table",
        action="store_true",
        help="print docs/backbones.md's table from reports/bench/backbones.json + gpu.json and exit",
    )
    args = parser.parse_args(argv)
    if args.doc_table:
        sys.stdout.write(doc_table() + "\n")
        return
    setup_logging()
    from rakuten.runtime.torch_setup import set_threads

    threads = set_threads(args.threads)
    wanted = [k for k in args.only.split(",") if k] or [f.key for f in FAMILIES + DEMO_FAMILIES]
    fams = [family(k) for k in wanted]
    start = time.perf_counter()
    texts = catalog_texts(args.text_rows) if any(f.kind == "text" for f in fams) else []
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
        "text_rows": len(texts),
        "method": f"1 warm-up + {args.steps} timed AdamW steps, {args.infer_batches} inference batches; text: "
        "length-grouped batches at padded-length quantiles, dynamic padding; images: random tensors",
        "families": {},
    }
    tok_cache: dict = {}
    for fam in fams:
        batch = fam.gpu_batch if fam.demo else args.batch
        size = 32 if args.tiny and fam.kind == "image" else None
        log.info("%s: %s batch %d", fam.key, fam.kind, batch)
        t0 = time.perf_counter()
        try:
            if fam.kind == "text":
                res = bench_text_cpu(fam, texts, tok_cache, args.tiny, batch, args.steps, args.infer_batches)
            else:
                res = bench_image_cpu(fam, args.tiny, batch, args.steps, args.infer_batches, size)
        except Exception as exc:  # noqa: BLE001 - one family failing must not lose the others' figures
            log.exception("%s failed", fam.key)
            res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        rows = DEMO_TRAIN_ROWS.get(fam.key, TRAIN_ROWS) if fam.demo else TRAIN_ROWS
        if "train_samples_per_s" in res:
            res["epoch_rows"] = rows
            res["epoch_s_estimate"] = round(rows / res["train_samples_per_s"], 1)
            if fam.demo:
                res["epoch_s_estimate_68k_rows"] = round(TRAIN_ROWS / res["train_samples_per_s"], 1)
        report["families"][fam.key] = {
            "kind": fam.kind,
            "hub_id": fam.hub_id,
            "demo": fam.demo,
            "wall_s": round(time.perf_counter() - t0, 1),
            **res,
        }
    counts = tuple(int(n) for n in args.thread_check.split(",") if n)
    if counts and texts and not args.tiny:
        log.info("thread check: camembert-base steps at %s threads", counts)
        report["thread_check"] = thread_check(texts, tok_cache, args.batch, counts)
        set_threads(threads)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report["peak_rss_mib"] = peak_rss_mib()
    print_table(report)
    write_json(report, args.out)
    log.info("wrote %s", args.out)


def select_flags(fam: Family) -> str:
    """How the pipeline selects ``fam`` (the demo configs are what `dvc repro` runs by default)."""
    if fam.demo:
        return "default profile (`dvc repro`)"
    if fam.kind == "text":
        return f"`-S camembert.profile=full -S camembert.full.model={fam.hub_id}`"
    return f"`-S resnet50.profile=full -S resnet50.full.arch={fam.hub_id}`"


def doc_table(cpu_path: str = "reports/bench/backbones.json", gpu_path: str = "reports/bench/gpu.json") -> str:
    """The markdown table of docs/backbones.md from the two reports: every figure comes from a JSON,
    and a family without a GPU measurement says so."""
    import json

    def load(path: str) -> dict:
        return json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).is_file() else {}

    cpu, gpu = load(cpu_path).get("families", {}), load(gpu_path)
    gpu_fams = gpu.get("families", {})
    head = (
        "| family | params (M) | select with | CPU train samples/s | CPU s/epoch | CPU infer samples/s "
        "| GPU train samples/s | GPU infer samples/s | GPU MFU (train) | GPU peak MiB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for fam in FAMILIES + DEMO_FAMILIES:
        c, g = cpu.get(fam.key, {}), gpu_fams.get(fam.key, {})
        if "error" in c or not c:
            cpu_cells = [c.get("error", "not measured yet")[:60], "", ""]
        else:
            cpu_cells = [str(c["train_samples_per_s"]), f"{c['epoch_s_estimate']:,.0f}", str(c["infer_samples_per_s"])]
        if fam.demo:
            gpu_cells = ["(CPU demo: not in the GPU run)", "", "", ""]
        elif not g:
            gpu_cells = ["not measured yet", "", "", ""]
        elif "error" in g:
            gpu_cells = [f"error: {g['error'][:50]}", "", "", ""]
        else:
            gpu_cells = [
                str(g.get("train_samples_per_s")),
                str(g.get("infer_samples_per_s")),
                "n/a" if g.get("mfu") is None else f"{100 * g['mfu']:.1f}%",
                str(g.get("peak_gpu_mib")),
            ]
        params = c.get("params_m", g.get("params_m", ""))
        lines.append("| " + " | ".join([fam.key, str(params), select_flags(fam), *cpu_cells, *gpu_cells]) + " |")
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

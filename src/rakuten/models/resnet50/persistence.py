"""A trained image model on disk: ``weights.pt`` (the state dict) beside ``resnet.json`` (config, history, rows).

Loading rebuilds the network from the saved config (same backbone factory, same ``img_size``) and never
reads launch knobs: a model trained under torchrun predicts in one process like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rakuten.core.config import parse_section
from rakuten.core.io import atomic_path
from rakuten.models.resnet50.backbones import make_net
from rakuten.models.resnet50.config import NAME, ResnetConfig, ResnetModel
from rakuten.runtime import distributed
from rakuten.runtime.torch_setup import choose_runtime, read_meta, set_threads, write_meta


def save(model: ResnetModel, directory: str | Path) -> None:
    """``weights.pt`` (state dict) and ``resnet.json`` (config, val history, row accounting); atomic."""
    with atomic_path(directory, is_dir=True) as tmp:
        torch.save({k: v.cpu() for k, v in model.net.state_dict().items()}, tmp / "weights.pt")
        write_meta(tmp / "resnet.json", model.config, model.history, model.rows)
        distributed.drop_launch_knobs(tmp / "resnet.json")  # how it was launched is not part of the model


def load(directory: str | Path) -> ResnetModel:
    """Load a model saved by :func:`save` onto CUDA when present, else CPU."""
    directory = Path(directory)
    meta = read_meta(directory / "resnet.json", directory / "weights.pt", "ResNet", NAME)
    cfg = parse_section(
        ResnetConfig, distributed.with_launch_knobs(meta["config"]), NAME, source=str(directory / "resnet.json")
    )
    set_threads(cfg.num_threads)  # predictions with the numerics the model was trained with, on any machine
    net = make_net(cfg.arch, cfg.image_size)  # timm: same img_size kwargs, so the saved state dict fits
    net.load_state_dict(torch.load(directory / "weights.pt", map_location="cpu", weights_only=True))
    runtime = choose_runtime("auto", "auto")
    return ResnetModel(
        net=net.to(runtime.device).eval(), config=cfg, history=meta.get("history", []), rows=meta.get("rows", {})
    )

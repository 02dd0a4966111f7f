"""Resolving pretrained weights: a local path first, then the library cache, then the hub.

Why one resolver: every model that starts from pretrained weights (CamemBERT, MarianMT,
torchvision ImageNet backbones, timm backbones) must behave the same on an offline machine: use
what is on disk, never silently fall back to random weights, and otherwise stop with ONE line that
says what to download, with which command on a connected machine, and where to put it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rakuten.core.errors import PipelineError

log = logging.getLogger(__name__)

LOCAL_ROOT = Path("models/pretrained")
#: ``weights`` values meaning "the backbone's default pretrained weights"
PRETRAINED = ("imagenet", "pretrained")
#: weight files of a timm Hugging Face repo, in timm's own order of preference
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hf_download_hint(repo_id: str, target: Path) -> str:
    return (
        f"on a connected machine run `hf download {repo_id} --local-dir {target.as_posix()}` "
        f"and copy {target.as_posix()}/ here (or set HF_HOME to a cache that has it)"
    )


def resolve_hf(
    name_or_path: str,
    local_dir: str | os.PathLike | None = None,
    required_files: tuple[str, ...] = ("config.json",),
    allow_patterns: tuple[str, ...] | None = None,
) -> str:
    """Return a directory holding the Hugging Face model ``name_or_path``.

    Order: ``name_or_path`` if it is an existing directory; ``local_dir`` (default
    ``models/pretrained/<name>``); the Hugging Face cache (no network); the hub (skipped when
    ``HF_HUB_OFFLINE=1``). A cache or hub snapshot counts only when it holds ``required_files``;
    ``allow_patterns`` limits what is looked up and downloaded (e.g. one weights file of a repo
    that ships several formats). Raises :class:`PipelineError` with one line when none works.
    """
    candidates = [Path(name_or_path)]
    default_local = LOCAL_ROOT / name_or_path.replace("/", "--")
    candidates.append(Path(local_dir) if local_dir else default_local)
    for candidate in candidates:
        if candidate.is_dir() and all((candidate / f).exists() for f in required_files):
            log.info("pretrained %s: using local directory %s", name_or_path, candidate)
            return str(candidate)
    if Path(name_or_path).is_absolute() or name_or_path.startswith((".", "models/")):
        raise PipelineError(
            f"pretrained weights: {name_or_path} is not a directory with "
            f"{', '.join(required_files)}; expected a saved Hugging Face model there"
        )
    from huggingface_hub import snapshot_download

    patterns = list(allow_patterns) if allow_patterns else None

    def complete(path: str) -> bool:
        return all((Path(path) / f).exists() for f in required_files)

    try:
        path = snapshot_download(name_or_path, local_files_only=True, allow_patterns=patterns)
        if complete(path):
            log.info("pretrained %s: using the Hugging Face cache %s", name_or_path, path)
            return path
    except Exception:  # noqa: BLE001 - any cache miss means "try the hub"
        pass
    if not _offline():
        try:
            path = snapshot_download(name_or_path, etag_timeout=5, allow_patterns=patterns)
            if complete(path):
                log.info("pretrained %s: downloaded to %s", name_or_path, path)
                return path
            log.debug("hub snapshot of %s lacks %s", name_or_path, ", ".join(required_files))
        except Exception as exc:  # noqa: BLE001 - network errors vary by library version
            log.debug("hub download of %s failed: %s", name_or_path, exc)
    raise PipelineError(
        f"pretrained weights for {name_or_path} not found locally and the hub is unreachable; "
        + hf_download_hint(name_or_path, candidates[1])
    )


def resolve_file(description: str, local_file: str | os.PathLike | None, cache_name: str, url: str | None) -> Path:
    """Return a weights file: ``local_file`` if given and present, else the torch hub cache
    (``$TORCH_HOME/hub/checkpoints/<cache_name>``), else a download from ``url`` unless offline.
    """
    if local_file:
        path = Path(local_file)
        if path.is_file():
            return path
        raise PipelineError(f"pretrained weights: {path} not found; expected the {description} file there")
    import torch.hub

    cached = Path(torch.hub.get_dir()) / "checkpoints" / cache_name
    if cached.is_file():
        log.info("pretrained %s: using torch cache %s", description, cached)
        return cached
    if url and not _offline():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cached), progress=False)
            return cached
        except Exception as exc:  # noqa: BLE001
            log.debug("download of %s failed: %s", url, exc)
            cached.unlink(missing_ok=True)
    fetch = f"run `curl -L -o {cache_name} {url}`" if url else f"fetch {cache_name}"
    raise PipelineError(
        f"pretrained weights for {description} not found locally and the download failed; "
        f"on a connected machine {fetch} and put it at {cached} "
        "(or name the file in params)"
    )


def resolve_torchvision(arch: str, weights: str) -> Path | None:
    """Weights file for torchvision model ``arch``: ``weights`` is ``none`` (random init, returns None),
    ``imagenet`` / ``pretrained`` (torchvision's default ImageNet weights: torch cache, then download) or a local file.

    The ImageNet file name and URL come from torchvision's weights enum, so the cache location is
    the one ``torchvision.models.<arch>(weights="DEFAULT")`` itself uses.
    """
    if weights == "none":
        return None
    if weights not in PRETRAINED:
        return resolve_file(f"{arch} weights", weights, Path(weights).name, None)
    from torchvision.models import get_model_weights

    try:
        default = get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise PipelineError(f"pretrained weights: torchvision has no ImageNet weights for {arch!r}") from None
    url = default.url
    return resolve_file(f"{arch} ImageNet ({default.name})", None, url.rsplit("/", 1)[-1], url)


def resolve_timm(name: str, weights: str) -> Path | None:
    """Weights file for timm model ``name``: ``weights`` is ``none`` (random init, returns None),
    ``imagenet`` / ``pretrained`` (the default pretrained weights of ``name``, tag included) or a local
    file / directory.

    Pretrained order, as for the other resolvers: ``models/pretrained/<hf_hub_id with / -> -->``
    (e.g. ``models/pretrained/timm--convnext_base.fb_in22k_ft_in1k/model.safetensors``), the Hugging
    Face cache, the hub unless ``HF_HUB_OFFLINE=1``; models published only as a URL go through the
    torch cache like torchvision's. Never None when pretrained weights were asked for.
    """
    if weights == "none":
        return None
    if weights not in PRETRAINED:
        path = Path(weights)
        if path.is_dir():
            found = [path / f for f in TIMM_FILES if (path / f).is_file()]
            if not found:
                raise PipelineError(
                    f"pretrained weights: {path} has no {' or '.join(TIMM_FILES)}; expected the {name} weights there"
                )
            return found[0]
        return resolve_file(f"{name} weights", weights, path.name, None)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise PipelineError(
            f"pretrained weights: timm has no pretrained weights for {name!r}; use weights: none or a local file"
        )
    if not cfg.hf_hub_id:
        return resolve_file(f"{name} ({cfg.tag or 'default'})", None, cfg.url.rsplit("/", 1)[-1], cfg.url)
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else TIMM_FILES
    first_error: PipelineError | None = None
    for filename in files:
        try:
            folder = resolve_hf(cfg.hf_hub_id, required_files=(filename,), allow_patterns=(filename, "config.json"))
            return Path(folder) / filename
        except PipelineError as exc:
            first_error = first_error or exc
    raise first_error

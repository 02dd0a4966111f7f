"""Frozen embeddings of every catalog row from the trained text and image models (the ``embed`` stage).

Why cache them: the ``joint`` head learns on top of the two trained encoders, which stay frozen. Running
CamemBERT and ResNet once per row, here, turns a sweep of the head (``dvc exp run -S joint.hidden=512``)
into seconds of CPU instead of two forward passes per epoch; the encoders run again only when they
change (their ``models/<name>`` folders are this stage's deps).

The encoders are the pipeline's own stage models (``embed.text_model: camembert`` ->
``models/camembert``, ``embed.image_model: resnet50`` -> ``models/resnet50``), their pooled sentence
embedding (:func:`rakuten.models.camembert.model.embed_texts`) and pre-logit image features
(:func:`rakuten.models.resnet50.model.embed_images`). ``rakuten predict`` computes the same embeddings for new
products with :func:`with_embeddings`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rakuten.contracts import preprocessing, registry
from rakuten.contracts.embeddings import EMBEDDINGS, IMAGE, IMAGE_OK, RECORD, TEXT, TEXT_OK, embeddings_table
from rakuten.core.config import knob
from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords
from rakuten.core.parallel import process_pool, set_worker_state, worker_count, worker_state
from rakuten.models.resnet50 import model as resnet50
from rakuten.models.runner import load_text_frame
from rakuten.runtime.torch_setup import set_threads

log = logging.getLogger(__name__)

NAME = "embed"
REPORT = Path("reports/embed.json")
#: encoder choice -> the module that loads and runs it (the stage of that name trains it into models/<name>):
#: the registered models marked ``encoder`` (rakuten.contracts.registry), per modality
TEXT_ENCODERS = registry.load_encoders("text")
IMAGE_ENCODERS = registry.load_encoders("image")


@dataclass(frozen=True)
class EmbedConfig:
    """``embed``: which trained stage models embed the catalog, and how fast (no knob changes the head)."""

    text_model: str = knob(
        "camembert",
        "text encoder: the trained model of this stage (models/<name>), its pooled sentence embedding",
        choices=tuple(TEXT_ENCODERS),
    )
    image_model: str = knob(
        "resnet50",
        "image encoder: the trained model of this stage (models/<name>), its pre-logit features",
        choices=tuple(IMAGE_ENCODERS),
    )
    eval_batch_size: int = knob(128, "rows per forward pass of both encoders", lo=1, hi=4096, runtime=True)
    num_threads: int = knob(
        2,
        "torch CPU threads (0 = all cores); 2: inference in batches of 128 ran 35% faster "
        "on 2 cores than 1 thread, with the same bits (training stages keep 1)",
        lo=0,
        hi=256,
        runtime=True,
    )

    workers: int = knob(
        2,
        "processes sharing the text and image passes, in chunks, one torch thread each (0 = one per core; 1 = "
        "in this process: texts on one thread, then images on num_threads; in-process below 5,000 rows). "
        "Every row is encoded alone, so the table is the same whatever the count",
        lo=0,
        hi=256,
        runtime=True,
    )

    def processes(self) -> int:
        """Worker processes: ``workers``, or one per core for 0."""
        return worker_count(self.workers)

    @property
    def encoders(self) -> dict[str, str]:
        return {"text": self.text_model, "image": self.image_model}


# ------------------------------------------------------------------------------------------ inputs


def load_frame(
    catalog: str | Path = "data/interim/catalog.parquet",
    split: str | Path = "data/interim/split.parquet",
    text: str | Path = "data/processed/text.parquet",
    quality: str | Path = "data/processed/image_quality.parquet",
) -> pd.DataFrame:
    """Every catalog row (train, val, test, official_test) with its split, cleaned text and cleaned image."""
    frame = load_text_frame(catalog, split, text)
    images = resnet50.load_image_frame(catalog, split, quality)
    return frame.merge(images[["row_id", "clean_path", "readable"]], on="row_id", how="inner", validate="one_to_one")


def input_flags(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(text_ok, image_ok): a non-empty cleaned text; an image found (catalog) and readable (image_clean)."""
    n = len(frame)
    text_ok = ~frame["text_empty"].fillna(True).to_numpy(dtype=bool) if "text_empty" in frame else np.ones(n, bool)
    image_ok = frame["readable"].fillna(False).to_numpy(dtype=bool) if "readable" in frame else np.ones(n, bool)
    if "image_ok" in frame:  # rakuten predict: the catalog flag of a new product (file found at all)
        image_ok = image_ok & frame["image_ok"].fillna(False).to_numpy(dtype=bool)
    return text_ok, image_ok


# ---------------------------------------------------------------------------------------- encoders


def _function(module: Any, name: str) -> Any:
    fn = getattr(module, name, None)
    if fn is None:
        raise PipelineError(f"{module.__name__} has no {name}(); the embed stage needs it (update the package)")
    return fn


def load_encoders(
    cfg: EmbedConfig, models_dir: str | Path = "models", records: ArtifactRecords | None = None
) -> tuple[Any, Any]:
    """The trained text and image models named by ``cfg``, batch size and CPU threads set from ``cfg``;
    both folders are checked against ``records`` (default: the project's dvc.lock) before loading."""
    models_dir = Path(models_dir)
    records = records or ArtifactRecords.for_path(models_dir)
    for name in (cfg.text_model, cfg.image_model):
        records.verify(models_dir / name)
    text_model = TEXT_ENCODERS[cfg.text_model].load(models_dir / cfg.text_model)
    image_model = IMAGE_ENCODERS[cfg.image_model].load(models_dir / cfg.image_model)
    for model in (text_model, image_model):
        model.config = dataclasses.replace(model.config, eval_batch_size=cfg.eval_batch_size)
    set_threads(cfg.num_threads)  # after the loads, which set the encoders' own training threads
    return text_model, image_model


def encode(
    frame: pd.DataFrame, text_model: Any, image_model: Any, encoders: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """(text, image) float32 embedding matrices of ``frame``'s rows, checked for shape and finiteness."""
    start, threads = time.perf_counter(), torch.get_num_threads()
    set_threads(1)  # texts run one per pass on CPU (row-invariant): a second thread only adds synchronisation
    try:
        text = np.asarray(_function(TEXT_ENCODERS[encoders["text"]], "embed_texts")(text_model, frame), np.float32)
    finally:
        set_threads(threads)  # images: convolutions run image by image, split over the threads, same bits
    mid = time.perf_counter()
    image = np.asarray(_function(IMAGE_ENCODERS[encoders["image"]], "embed_images")(image_model, frame), np.float32)
    log.info(
        "embedded %d rows: text %s in %.1f s, image %s in %.1f s",
        len(frame),
        text.shape[1:],
        mid - start,
        image.shape[1:],
        time.perf_counter() - mid,
    )
    return _checked(text, image, len(frame), encoders)


def _checked(
    text: np.ndarray, image: np.ndarray, rows: int, encoders: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    for what, m in (("text", text), ("image", image)):
        if m.ndim != 2 or m.shape[0] != rows:
            raise PipelineError(
                f"{encoders[what]}: {what} embeddings of shape {m.shape}, expected ({rows}, d): one row per input row"
            )
    return text, image


#: rows per task of :func:`encode_in_workers` (a text chunk ~4 s, an image chunk ~12 s on one core)
CHUNK = 2048
#: below this many rows :func:`embed_catalog` encodes in-process: each worker first loads and checks both
#: encoders (~3 s), more than it would save
POOL_MIN_ROWS = 5000


def _start_worker(cfg: EmbedConfig, models_dir: Path, frame: pd.DataFrame) -> None:
    """A worker's state: the frame and both encoders, loaded (and checked) once, on one torch thread."""
    text_model, image_model = load_encoders(cfg, models_dir)
    set_threads(1)
    set_worker_state((frame, text_model, image_model, cfg.encoders))


def _encode_part(task: tuple[str, int, int]) -> np.ndarray:
    modality, a, b = task
    frame, text_model, image_model, encoders = worker_state()
    part = frame.iloc[a:b].reset_index(drop=True)
    if modality == "text":
        return np.asarray(_function(TEXT_ENCODERS[encoders["text"]], "embed_texts")(text_model, part), np.float32)
    return np.asarray(_function(IMAGE_ENCODERS[encoders["image"]], "embed_images")(image_model, part), np.float32)


def encode_in_workers(
    frame: pd.DataFrame, cfg: EmbedConfig, models_dir: str | Path, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode` of ``frame`` by ``workers`` spawned processes that each load (and check) both encoders and
    take chunks of :data:`CHUNK` rows of either pass, one torch thread each.

    Why: the text pass runs one text per forward on one thread (row-invariant), which leaves the other cores
    idle in-process; sharing both passes' chunks keeps every core busy. Each row is encoded alone, so the
    matrices are the same bits as in one process. Image chunks are queued first, the shorter text chunks
    last, so the workers finish together."""
    frame = frame.reset_index(drop=True)
    bounds = [(a, min(a + CHUNK, len(frame))) for a in range(0, len(frame), CHUNK)]
    tasks = [("image", a, b) for a, b in bounds] + [("text", a, b) for a, b in bounds]
    start = time.perf_counter()
    init = functools.partial(_start_worker, cfg, Path(models_dir).resolve(), frame)
    with process_pool(min(workers, len(tasks)), initializer=init, spawn=True) as pool:
        parts = list(tqdm(pool.map(_encode_part, tasks), total=len(tasks), desc="embed chunks", unit="chunk"))
    image, text = np.concatenate(parts[: len(bounds)]), np.concatenate(parts[len(bounds) :])
    log.info(
        "embedded %d rows in %d processes: text %s, image %s in %.1f s",
        len(frame),
        workers,
        text.shape[1:],
        image.shape[1:],
        time.perf_counter() - start,
    )
    return _checked(text, image, len(frame), cfg.encoders)


def embed_catalog(
    frame: pd.DataFrame, cfg: EmbedConfig, models_dir: str | Path = "models", min_pool_rows: int = POOL_MIN_ROWS
) -> pd.DataFrame:
    """The ``embed`` stage's table: :func:`embed_frame` with the encoders loaded here, or
    :func:`encode_in_workers` with ``cfg.workers`` processes from ``min_pool_rows`` rows on."""
    workers = cfg.processes()
    if workers <= 1 or len(frame) < min_pool_rows:
        return embed_frame(frame, *load_encoders(cfg, models_dir), cfg)
    records = ArtifactRecords.for_path(Path(models_dir))
    for name in (cfg.text_model, cfg.image_model):  # fail here in one line, before any worker starts
        records.verify(Path(models_dir) / name)
    text, image = encode_in_workers(frame, cfg, models_dir, workers)
    text_ok, image_ok = input_flags(frame)
    return embeddings_table(frame["row_id"].to_numpy(), text, image, text_ok, image_ok)


def embed_frame(frame: pd.DataFrame, text_model: Any, image_model: Any, cfg: EmbedConfig) -> pd.DataFrame:
    """The :data:`~rakuten.contracts.embeddings.EMBEDDINGS` table of ``frame`` (every row, flags included)."""
    text, image = encode(frame, text_model, image_model, cfg.encoders)
    text_ok, image_ok = input_flags(frame)
    return embeddings_table(frame["row_id"].to_numpy(), text, image, text_ok, image_ok)


def with_embeddings(
    frame: pd.DataFrame, models_dir: str | Path, encoders: Mapping[str, str], records: ArtifactRecords | None = None
) -> pd.DataFrame:
    """``frame`` (new products, cleaned as the models were trained) plus the embedding and flag columns the
    ``joint`` model reads: what ``rakuten predict`` gives it, computed by the saved (verified) encoders."""
    cfg = EmbedConfig(text_model=encoders["text"], image_model=encoders["image"])
    return with_encoded(frame, *load_encoders(cfg, models_dir, records), cfg.encoders)


def with_encoded(frame: pd.DataFrame, text_model: Any, image_model: Any, encoders: Mapping[str, str]) -> pd.DataFrame:
    """:func:`with_embeddings` with encoders already loaded (a long-lived service loads them once)."""
    return with_vectors(frame, *encode(frame, text_model, image_model, encoders))


def with_vectors(frame: pd.DataFrame, text: np.ndarray, image: np.ndarray) -> pd.DataFrame:
    """``frame`` plus the embedding and flag columns the ``joint`` model reads, from embeddings computed
    elsewhere (``rakuten predict`` takes them from the pass that also gives the encoders' probabilities)."""
    text_ok, image_ok = input_flags(frame)
    out = frame.copy()
    out[TEXT], out[IMAGE] = list(text), list(image)
    out[TEXT_OK], out[IMAGE_OK] = text_ok, image_ok
    return out


# ------------------------------------------------------------------------------------------ records


def encoder_preprocessing(cfg: EmbedConfig, models_dir: str | Path = "models") -> dict[str, dict]:
    """The cleaning both encoders were trained on (their ``preprocessing.json``), for ``models/joint``."""
    trained, _ = preprocessing.load_trained(models_dir, {cfg.text_model: "text", cfg.image_model: "image"})
    return trained


def record(cfg: EmbedConfig, table: pd.DataFrame, trained: Mapping[str, dict]) -> dict:
    """``data/features/embeddings.json``: encoders, dims, and the preprocessing they were trained on."""
    return {"encoders": cfg.encoders, "dims": dims(table), "preprocessing": dict(trained)}


def dims(table: pd.DataFrame) -> dict[str, int]:
    return {
        "text": int(len(table[TEXT].iloc[0])) if len(table) else 0,
        "image": int(len(table[IMAGE].iloc[0])) if len(table) else 0,
    }


def report(cfg: EmbedConfig, table: pd.DataFrame, frame: pd.DataFrame) -> dict:
    """``reports/embed.json``: rows (per split, with usable text / image), dims, encoders; no timings, so a
    forced rerun writes the same bytes."""
    splits = frame["split"].astype(str).value_counts().sort_index()
    return {
        "rows": int(len(table)),
        "rows_per_split": {k: int(v) for k, v in splits.items()},
        "rows_text_ok": int(table[TEXT_OK].sum()),
        "rows_image_ok": int(table[IMAGE_OK].sum()),
        "dims": dims(table),
        "encoders": cfg.encoders,
        "output": EMBEDDINGS.as_posix(),
        "record": RECORD.as_posix(),
    }

"""Rendering each row's image (its planned defect applied) to a JPEG file, in worker processes.

Every row draws from its own RNG seeded by ``(seed, row)``, so the bytes do not depend on the number
of workers; workers write their JPEG files themselves, so no image bytes go through a pipe.
"""

from __future__ import annotations

import cv2
import numpy as np
from tqdm import tqdm

from rakuten.core.parallel import process_pool
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.defects import add_blur, add_border, add_red_cast, near_duplicate_of
from rakuten.data.sample.images import render_product


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """``img`` (BGR) as JPEG bytes at ``quality``."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _row_rng(seed: int, row: int, salt: int = 0) -> np.random.Generator:
    """The row's image generator: seeded by ``(seed, row, salt)`` only, whichever process renders it."""
    return np.random.default_rng([seed, row, salt])


def _render_clean(seed: int, row: int, code: int, size: int) -> np.ndarray:
    """Row ``row``'s clean photo: the same pixels whether drawn for the row or for its duplicates."""
    return render_product(code, size, _row_rng(seed, row, 1))


def render_row(task: tuple) -> bytes:
    """JPEG bytes of one row's image according to its planned defect (pure; safe in a worker)."""
    seed, row, code, size, quality, defect, source_row, source_code = task
    rng = _row_rng(seed, row, 2)
    if defect == "exact_duplicates":
        return encode_jpeg(_render_clean(seed, source_row, source_code, size), quality)
    if defect == "near_duplicates":
        return encode_jpeg(near_duplicate_of(_render_clean(seed, source_row, source_code, size), rng), quality)
    if defect == "border":
        return encode_jpeg(add_border(code, size, rng), quality)
    img = _render_clean(seed, row, code, size)
    if defect == "blur":
        img = add_blur(img, rng)
    elif defect == "red_cast":
        img = add_red_cast(img, rng)
    return encode_jpeg(img, quality)


def render_to_file(job: tuple[str, tuple]) -> int:
    """Render ``job = (path, task)`` and write the JPEG to ``path``; the byte count goes back.

    Why: workers write their files themselves, so ~100 KB per image never crosses a pipe and the
    parent (a third process on 2 cores) only counts.
    """
    path, task = job
    blob = render_row(task)
    with open(path, "wb") as fh:
        fh.write(blob)
    return len(blob)


def render_all(jobs: list[tuple[str, tuple]], n_jobs: int) -> int:
    """Write every job's image (``n_jobs`` processes), with a progress bar; returns total bytes."""
    total = 0
    if n_jobs == 1 or len(jobs) < 2:
        for job in tqdm(jobs, desc="sample images", unit="img"):
            total += render_to_file(job)
        return total
    # chunks of <= 64 images (~0.2 s at 500 px): a smooth bar and balanced workers at the end
    chunksize = max(1, min(64, len(jobs) // (n_jobs * 8)))
    # OpenCV on one thread while the workers are forked: they already use every core, and a child
    # must never touch (or resize: that hangs in pthread_cond_destroy) a thread pool whose threads
    # stayed in the parent
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with process_pool(n_jobs) as pool:
            sizes = pool.map(render_to_file, jobs, chunksize=chunksize)  # submits all: forked workers start here
            cv2.setNumThreads(threads)
            try:
                for size in tqdm(sizes, total=len(jobs), desc="sample images", unit="img"):
                    total += size
            except BaseException:  # interrupted: drop queued chunks before the temporary output is removed
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        cv2.setNumThreads(threads)
    return total


def image_tasks(cfg: SampleConfig, labels: np.ndarray, defect: np.ndarray, source: np.ndarray) -> list[tuple]:
    """One :func:`render_row` task per row (plain Python values: cheap to pickle to a worker)."""
    label_list, source_list = labels.tolist(), source.tolist()
    return [
        (
            cfg.seed,
            i,
            label_list[i],
            cfg.image_size,
            cfg.planted.jpeg_quality,
            defect[i],
            source_list[i],
            label_list[source_list[i]] if source_list[i] >= 0 else -1,
        )
        for i in range(len(label_list))
    ]

"""Writing the whole synthetic catalog: what the ``sample`` stage calls.

Tables first (:mod:`.tables`), the label noise (:mod:`.noise`, changing ``Y_train`` only), then the CSVs,
every image (:mod:`.render`, in worker processes) and ``defects.json``, all in a temporary folder renamed
into place at the end, so a killed run leaves nothing behind.
"""

from __future__ import annotations

import logging
import os

from rakuten.core.io import atomic_path
from rakuten.data.sample.config import SampleConfig
from rakuten.data.sample.noise import plant_label_noise
from rakuten.data.sample.render import image_tasks, render_all
from rakuten.data.sample.tables import generate_tables
from rakuten.data.sample.writer import ground_truth, image_files, write_defects, write_tables

log = logging.getLogger(__name__)


def write_sample(cfg: SampleConfig, out_dir: str | os.PathLike) -> dict:
    """Write the catalog to ``out_dir`` (atomically, as a whole) and return a summary."""
    x, labels, langs, hard, defect, source, text_truth = generate_tables(cfg)
    n_train = cfg.n_train
    # last, with a generator of its own: only Y_train changes; images and the other truths keep the true label
    duplicated = {row for pair in text_truth["duplicate_texts"] for row in pair}
    given, label_noise = plant_label_noise(labels, n_train, cfg.label_noise, cfg.seed, duplicated)
    files = image_files(x, n_train)
    tasks = image_tasks(cfg, labels, defect, source)
    with atomic_path(out_dir, is_dir=True) as tmp:
        write_tables(tmp, x, given, n_train)
        image_bytes = render_all([(str(tmp / path), task) for path, task in zip(files, tasks)], cfg.n_jobs)
        row_truth = {**text_truth, "label_noise": label_noise}
        truth = ground_truth(files, labels, langs, hard, defect, source, row_truth, n_train, cfg)
        write_defects(tmp, truth)
    log.info("wrote %d train + %d test rows (%.0f MB of images) to %s", n_train, cfg.n_test, image_bytes / 1e6, out_dir)
    return {k: (len(v) if isinstance(v, list) else v) for k, v in truth["image_defects"].items()}

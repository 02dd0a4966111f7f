"""DVC stage `embed`: frozen text + image embeddings of every catalog row, from the trained camembert / resnet50."""

import logging
import time

from rakuten.contracts.embeddings import EMBEDDINGS, RECORD
from rakuten.core.config import from_params
from rakuten.core.io import write_json, write_parquet
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.models import embed
from rakuten.runtime.gpus import pin_free_gpus


def main() -> None:
    cfg = from_params(embed.EmbedConfig, load_params(), "embed")  # validated before any work
    pin_free_gpus("auto")  # one free GPU of a shared machine (dvc queue workers), before CUDA starts
    start = time.perf_counter()
    trained = embed.encoder_preprocessing(cfg)  # models/<encoder>/preprocessing.json: fail fast
    frame = embed.load_frame()
    table = embed.embed_catalog(frame, cfg)  # both encoders checked against dvc.lock before loading
    write_parquet(table, EMBEDDINGS)
    write_json(embed.record(cfg, table, trained), RECORD)
    write_json(embed.report(cfg, table, frame), embed.REPORT)
    logging.getLogger("rakuten").info("embed: %d rows in %.1f s", len(table), time.perf_counter() - start)


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `ingest`: validate the official layout (sample or raw) and write one catalog table."""

from dataclasses import asdict

from rakuten.core.config import from_params
from rakuten.core.io import write_json, write_parquet
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.data.ingest import load_catalog
from rakuten.data.source import DataConfig, IngestConfig


def main() -> None:
    params = load_params()
    data, cfg = from_params(DataConfig, params, "data"), from_params(IngestConfig, params, "ingest")
    catalog, report = load_catalog(data.root, on_bad_image=cfg.on_bad_image)
    write_parquet(catalog, "data/interim/catalog.parquet")
    write_json({"source": data.source, **asdict(report), "rows_out": len(catalog)}, "reports/ingest.json")


if __name__ == "__main__":
    run_stage(main)

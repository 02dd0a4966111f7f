"""DVC stage `ingest`: validate the official layout (sample or raw) and write one catalog table."""
from dataclasses import asdict

from rakuten import params as P
from rakuten.data.catalog import load_catalog
from rakuten.io import write_json, write_parquet
from rakuten.stage import run_stage


def main() -> None:
    params = P.load_params()
    source = P.choice(params, "data.source", ["sample", "raw"])
    root = "data/sample" if source == "sample" else P.get(params, "data.raw_dir")
    on_bad_image = P.choice(params, "ingest.on_bad_image", ["error", "flag"])
    catalog, report = load_catalog(root, on_bad_image=on_bad_image)
    write_parquet(catalog, "data/interim/catalog.parquet")
    write_json({"source": source, **asdict(report), "rows_out": len(catalog)}, "reports/ingest.json")


if __name__ == "__main__":
    run_stage(main)

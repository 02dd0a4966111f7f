"""DVC stage `split`: duplicate-aware stratified train/val/test + the official test rows.

Duplicate groups: same normalised text, same image bytes, or near-duplicate images (image_hash stage).
"""

from rakuten.core.config import from_params
from rakuten.core.io import read_parquet, write_json, write_parquet
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.data.split import SplitConfig, split_catalog


def main() -> None:
    cfg = from_params(SplitConfig, load_params(), "split")
    catalog = read_parquet("data/interim/catalog.parquet", stage_hint="ingest")
    image_groups = read_parquet("data/interim/image_hashes.parquet", stage_hint="image_hash")
    table, report = split_catalog(catalog, cfg.fractions, cfg.seed, image_groups)
    write_parquet(table, "data/interim/split.parquet")
    write_json(report, "reports/split.json")


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `image_hash`: file SHA-1 + crop-tolerant pHashes of every image, exact and near-duplicate groups.

Runs before `split` (which keeps each group in one split) and `image_clean` (which reads the groups).
"""

from rakuten.core.config import from_params
from rakuten.core.io import read_parquet, write_json, write_parquet
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.image.image_hash import HashConfig, hash_catalog, hash_report


def main() -> None:
    cfg = from_params(HashConfig, load_params(), "image_hash")
    catalog = read_parquet("data/interim/catalog.parquet", stage_hint="ingest")
    table = hash_catalog(catalog, cfg)
    write_parquet(table, "data/interim/image_hashes.parquet")
    write_json(hash_report(table), "reports/image_hash.json")


if __name__ == "__main__":
    run_stage(main)

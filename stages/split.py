"""DVC stage `split`: duplicate-aware stratified train/val/test + the official test rows.

Duplicate groups: same normalised text, same image bytes, or near-duplicate images (image_hash stage).
"""
from rakuten import params as P
from rakuten.data.split import split_catalog
from rakuten.io import read_parquet, write_json, write_parquet
from rakuten.stage import run_stage


def main() -> None:
    params = P.load_params()
    train, val, test = P.fractions(params, ["split.train", "split.val", "split.test"])
    seed = P.integer(params, "split.seed", 0)
    catalog = read_parquet("data/interim/catalog.parquet", stage_hint="ingest")
    image_groups = read_parquet("data/interim/image_hashes.parquet", stage_hint="image_hash")
    table, report = split_catalog(catalog, {"train": train, "val": val, "test": test}, seed, image_groups)
    write_parquet(table, "data/interim/split.parquet")
    write_json(report, "reports/split.json")


if __name__ == "__main__":
    run_stage(main)

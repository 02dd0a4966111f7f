"""DVC stage `image_clean`: duplicate policy, blur, red cast, borders; cleaned 224 px images + quality table.

Duplicate groups come from `image_hash` (data/interim/image_hashes.parquet), computed before the split.
"""

from rakuten.contracts.preprocessing import write_record
from rakuten.core.config import from_params
from rakuten.core.io import read_parquet, write_json, write_parquet
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.data.source import DataConfig
from rakuten.image.config import ImageCleanConfig
from rakuten.image.contact_sheet import contact_sheets, write_contact_sheets
from rakuten.image.image_clean import clean_frame
from rakuten.image.quality_report import quality_report
from rakuten.image.scoring import load_defects, score_detectors


def main() -> None:
    params = load_params()
    data, cfg = from_params(DataConfig, params, "data"), from_params(ImageCleanConfig, params, "image_clean")
    catalog = read_parquet("data/interim/catalog.parquet", stage_hint="ingest")
    rows = catalog.merge(read_parquet("data/interim/split.parquet", stage_hint="split"), on="row_id")
    hashes = read_parquet("data/interim/image_hashes.parquet", stage_hint="image_hash")
    labels_split = rows[["row_id", "prdtypecode", "split"]]
    table = clean_frame(rows, "data/processed/images", cfg, labels_split=labels_split, hashes=hashes)
    sources = rows["image_path"].tolist()
    detection = (
        score_detectors(table, sources, load_defects("data/sample/defects.json")) if data.source == "sample" else None
    )
    write_parquet(table, "data/processed/image_quality.parquet")
    write_record("image_clean", cfg)  # data/processed/image_clean.json: what the image model is trained on
    write_json(quality_report(table, cfg, rows["split"], detection), "reports/image_quality.json")
    sheets = contact_sheets(table, sources, rows["prdtypecode"].tolist(), cfg.contact_sheet.examples)
    write_contact_sheets(sheets, "reports/figures/image_clean")


if __name__ == "__main__":
    run_stage(main)

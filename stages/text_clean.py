"""DVC stage `text_clean`: HTML/encoding cleaning, language, optional translation, spaCy normalisation."""

from rakuten.contracts.preprocessing import write_record
from rakuten.core.config import from_params
from rakuten.core.io import read_parquet, write_json, write_parquet
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.text.text_clean import TextCleanConfig, clean_with_report, stage_report


def main() -> None:
    cfg = from_params(TextCleanConfig, load_params(), "text_clean")  # every key validated before any work
    catalog = read_parquet("data/interim/catalog.parquet", stage_hint="ingest")
    frame, stats = clean_with_report(catalog, cfg)
    write_parquet(frame, "data/processed/text.parquet")
    write_record("text_clean", cfg)  # data/processed/text_clean.json: what the text models are trained on
    write_json(stage_report(catalog, frame, stats, cfg), "reports/text_clean.json")


if __name__ == "__main__":
    run_stage(main)

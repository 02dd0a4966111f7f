"""DVC stage `text_clean`: HTML/encoding cleaning, language, optional translation, spaCy normalisation."""
from rakuten import params as P
from rakuten.io import read_parquet, write_json, write_parquet
from rakuten.stage import run_stage
from rakuten.text.pipeline import clean_with_report, parse_config, stage_report


def main() -> None:
    section = P.get(P.load_params(), "text_clean")
    cfg = parse_config(section)  # every key validated before any work
    catalog = read_parquet("data/interim/catalog.parquet", stage_hint="ingest")
    frame, stats = clean_with_report(catalog, section)
    write_parquet(frame, "data/processed/text.parquet")
    write_json(stage_report(catalog, frame, stats, cfg), "reports/text_clean.json")


if __name__ == "__main__":
    run_stage(main)

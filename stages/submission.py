"""DVC stage `submission`: the saved fused model on the official X_test rows -> reports/submission.csv."""

from rakuten.contracts.model_files import read_probs
from rakuten.core.integrity import verified
from rakuten.core.io import read_parquet, write_csv, write_json
from rakuten.core.stage import run_stage
from rakuten.fusion import persistence
from rakuten.serving.submission import official_submission


def main() -> None:
    model = persistence.load(verified("models/fusion"))  # a pickle: loaded only once its hash matches dvc.lock
    catalog = read_parquet("data/interim/catalog.parquet", stage_hint="ingest")
    tables = {name: read_probs(name) for name in model.models}
    text = read_parquet("data/processed/text.parquet", stage_hint="text_clean").set_index("row_id")
    images = read_parquet("data/processed/image_quality.parquet", stage_hint="image_clean").set_index("row_id")
    submission, report = official_submission(
        catalog, model, tables, text_ok=~text["text_empty"].astype(bool), image_ok=images["readable"].astype(bool)
    )
    write_csv(submission, "reports/submission.csv", index=True)
    write_json(report, "reports/submission.json")


if __name__ == "__main__":
    run_stage(main)

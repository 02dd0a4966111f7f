"""DVC stage `fusion`: fit every fusion strategy on val, compare them, calibrate the chosen one, set its
human-review threshold, save the fused model."""

from rakuten.contracts import registry
from rakuten.contracts.model_files import read_probs, write_model_outputs
from rakuten.core.config import from_params
from rakuten.core.io import read_parquet, write_json, write_parquet
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.fusion import fusion, persistence
from rakuten.fusion.config import FusionConfig
from rakuten.fusion.review import ReviewConfig


def main() -> None:
    params = load_params()
    cfg = from_params(FusionConfig, params, "fusion")
    review = from_params(ReviewConfig, params, "review")
    tables = {name: read_probs(name) for name in cfg.models}
    groups = read_parquet("data/interim/split.parquet", stage_hint="split").set_index("row_id")["group_id"]
    text = read_parquet("data/processed/text.parquet", stage_hint="text_clean").set_index("row_id")
    images = read_parquet("data/processed/image_quality.parquet", stage_hint="image_clean").set_index("row_id")
    result = fusion.fuse_tables(
        tables,
        [registry.spec(m).modality for m in cfg.models],
        cfg,
        groups=groups,
        text_ok=~text["text_empty"].astype(bool),
        image_ok=images["readable"].astype(bool),
        review=review,
    )
    persistence.save(result.model, "models/fusion")
    write_model_outputs("fusion", result.table)
    write_parquet(result.predictions, "reports/fusion_predictions.parquet")
    write_parquet(result.uncalibrated, "reports/fusion_uncalibrated.parquet")  # the before of calibration
    write_json(
        {
            "chosen": result.model.strategy,
            "selection": "best out-of-fold val weighted F1" if cfg.strategy == "auto" else "forced by fusion.strategy",
            **result.model.summary(),
            "strategies": result.comparison.to_dict(orient="records"),
            "calibration": result.calibration,
            "review": result.review,
        },
        "reports/fusion.json",
    )


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `evaluate`: test scores with bootstrap intervals, calibration and the review threshold on
test, per-class tables and confusion plots for every model and fusion, and the report reports/report.html
(rakuten.evaluation.report.page)."""

from pathlib import Path

from rakuten.contracts.model_files import read_probs
from rakuten.contracts.registry import MODELS
from rakuten.core.config import from_params
from rakuten.core.io import atomic_path, read_json, read_parquet, write_csv, write_json, write_text
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.data.source import DataConfig
from rakuten.evaluation import evaluate as E
from rakuten.evaluation.report.config import ReportConfig, ReportInputs
from rakuten.evaluation.report.image_model import IMAGE_MODEL, image_model_explainer
from rakuten.evaluation.report.label_issues import read_label_issues
from rakuten.evaluation.report.page import build_report
from rakuten.evaluation.report.tables import titles_by_row
from rakuten.fusion.config import FusionConfig


def main() -> None:
    params = load_params()
    data, cfg = from_params(DataConfig, params, "data"), from_params(FusionConfig, params, "fusion")
    ecfg = from_params(E.EvaluateConfig, params, "evaluate")
    # every model stage's table (all are deps of this stage), not only those fused: dvc.yaml declares one
    # confusion plot per model, and a model left out of fusion is still worth scoring
    tables = {name: read_probs(name) for name in dict.fromkeys([*MODELS, *cfg.models])}
    fused = read_probs("fusion")
    fusion_json = read_json("reports/fusion.json")
    preds = E.labelled_predictions(tables, fused, read_parquet("reports/fusion_predictions.parquet", "fusion"))
    table, per_class, confusion = E.evaluate_predictions(preds)
    probs = {
        **tables,
        "fusion_uncalibrated": read_parquet("reports/fusion_uncalibrated.parquet", "fusion"),
        "fusion": fused,
    }
    trust = E.trust_figures(preds, table, probs, fusion_json.get("review"), ecfg)
    with atomic_path("reports/evaluation", is_dir=True) as tmp:  # test split only
        for name, frame in per_class.items():
            frame.to_csv(tmp / f"per_class_{name}.csv", index=False)
    for name, frame in confusion.items():
        write_csv(frame, f"reports/plots/confusion_{name}.csv")
    if trust.risk_curve is not None:
        write_csv(trust.risk_curve, "reports/plots/risk_coverage.csv")
    summary = E.summary_metrics(table, trust.intervals)
    write_json(
        E.metrics_document(summary, ecfg, trust.paired_gain, trust.calibration, trust.review), "reports/metrics.json"
    )
    n_rows = fused["split"].astype(str).value_counts().to_dict()
    chosen = fusion_json["chosen"]
    md = E.results_markdown(table, data.source, n_rows, chosen, trust.intervals, trust.paired_gain, ecfg.level)
    write_text(md, "reports/results.md")
    titles = titles_by_row(read_parquet("data/interim/catalog.parquet", "ingest"))
    inputs = ReportInputs(
        table=table,
        per_class=per_class,
        chosen=chosen,
        data_source=data.source,
        n_rows=n_rows,
        fused=fused,
        image_probs=tables[IMAGE_MODEL],
        titles=titles,
        images=read_parquet("data/processed/image_quality.parquet", "image_clean"),
        contact_sheets=sorted(Path("reports/figures/image_clean").glob("*.png")),
        level=ecfg.level,
        intervals=trust.intervals,
        paired_gain=trust.paired_gain,
        calibration=trust.calibration,
        reliability=trust.reliability,
        calibration_method=fusion_json.get("calibration", {}).get("chosen", "none"),
        review=trust.review,
        risk_curve=trust.risk_curve,
        label_issues=read_label_issues(),
        label_audit=read_json("reports/label_audit.json"),
    )
    html = build_report(
        inputs, from_params(ReportConfig, params, "report"), image_model_explainer(f"models/{IMAGE_MODEL}")
    )
    write_text(html, "reports/report.html")


if __name__ == "__main__":
    run_stage(main)

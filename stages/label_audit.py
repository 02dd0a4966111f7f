"""DVC stage `label_audit`: flag likely mislabelled train rows (cross-fitted models + cleanlab) and write the
split the model stages train with (label_audit.label_noise: keep or drop the flagged rows)."""

import sys
from pathlib import Path

# stages/fasttext.py would shadow the `fasttext` library that rakuten.models.fasttext imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rakuten.contracts.model_files import SPLIT, TRAINING_SPLIT  # noqa: E402
from rakuten.core.config import from_params  # noqa: E402
from rakuten.core.io import read_json, read_parquet, write_csv, write_json, write_parquet  # noqa: E402
from rakuten.core.params import load_params  # noqa: E402
from rakuten.core.stage import run_stage  # noqa: E402
from rakuten.data.source import DataConfig  # noqa: E402
from rakuten.evaluation.label_audit import audit, issues, truth  # noqa: E402
from rakuten.evaluation.label_audit.config import LabelAuditConfig  # noqa: E402
from rakuten.models import fasttext, tfidf_svm  # noqa: E402


def main() -> None:
    params = load_params()  # every section validated before any work
    cfg = from_params(LabelAuditConfig, params, "label_audit")
    data = from_params(DataConfig, params, "data")
    configs = {
        "tfidf_svm": from_params(tfidf_svm.TfidfSvmConfig, params, "tfidf_svm"),
        "fasttext": from_params(fasttext.FastTextConfig, params, "fasttext"),
    }
    frame = audit.load_audit_frame(cfg)
    result = audit.run_audit(frame, cfg, audit.fitters(cfg.models, configs))
    split = read_parquet(SPLIT, stage_hint="split")
    training = issues.training_split(split, result.issues["row_id"], cfg.label_noise)
    figures = {**result.figures, "rows_dropped": int((training["split"] == issues.DROPPED).sum())}
    if data.source == "sample":  # the generator's planted noise: the audit's ground truth
        catalog = read_parquet(audit.CATALOG, stage_hint="ingest")
        planted = truth.planted_noise(read_json(truth.DEFECTS), catalog)
        figures["ground_truth"] = truth.score_flags(result.issues, planted, frame["row_id"])
    write_csv(result.issues, audit.ISSUES)
    write_json(figures, audit.REPORT)
    write_parquet(training, TRAINING_SPLIT)


if __name__ == "__main__":
    run_stage(main)

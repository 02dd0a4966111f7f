"""DVC stage `tfidf_svm`: TF-IDF + LinearSVC (or RF / SGD / logistic regression, SMOTE options)."""

from rakuten.contracts.preprocessing import load_records, save_with_model
from rakuten.core.config import from_params
from rakuten.core.io import write_csv
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.models import tfidf_svm
from rakuten.models.runner import fit_and_report, load_text_frame


def main() -> None:
    cfg = from_params(tfidf_svm.TfidfSvmConfig, load_params(), "tfidf_svm")  # validated before any work
    trained_on = load_records(["text_clean"])  # data/processed/text_clean.json
    frame = load_text_frame()
    model, _ = fit_and_report("tfidf_svm", tfidf_svm, cfg, frame)
    save_with_model("models/tfidf_svm", trained_on)  # read back by `rakuten predict`
    train = frame[frame["split"] == "train"]
    write_csv(tfidf_svm.top_terms(model, train), "reports/top_terms/tfidf_svm.csv")


if __name__ == "__main__":
    run_stage(main)

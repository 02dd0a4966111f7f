"""DVC stage `tfidf_svm`: TF-IDF + LinearSVC (or RF / SGD / logistic regression, SMOTE options)."""
from rakuten import params as P
from rakuten.io import write_csv
from rakuten.models import tfidf_svm
from rakuten.models.text_runner import fit_and_report, load_text_frame
from rakuten.stage import run_stage


def main() -> None:
    cfg = tfidf_svm.parse_config(P.get(P.load_params(), "tfidf_svm"))  # validated before any work
    frame = load_text_frame()
    model, _ = fit_and_report("tfidf_svm", tfidf_svm, cfg, frame)
    train = frame[frame["split"] == "train"]
    write_csv(tfidf_svm.top_terms(model, train), "reports/top_terms/tfidf_svm.csv")


if __name__ == "__main__":
    run_stage(main)

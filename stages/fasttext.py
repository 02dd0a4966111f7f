"""DVC stage `fasttext`: supervised fastText on the cleaned text (column chosen in params)."""

import sys
from pathlib import Path

# this script's own name would shadow the `fasttext` library: drop stages/ from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rakuten.contracts.preprocessing import load_records, save_with_model  # noqa: E402
from rakuten.core.config import from_params  # noqa: E402
from rakuten.core.params import load_params  # noqa: E402
from rakuten.core.stage import run_stage  # noqa: E402
from rakuten.models import fasttext  # noqa: E402
from rakuten.models.runner import fit_and_report, load_text_frame  # noqa: E402


def main() -> None:
    cfg = from_params(fasttext.FastTextConfig, load_params(), "fasttext")  # validated before any work
    trained_on = load_records(["text_clean"])  # data/processed/text_clean.json
    fit_and_report("fasttext", fasttext, cfg, load_text_frame())
    save_with_model("models/fasttext", trained_on)  # read back by `rakuten predict`


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `fasttext`: supervised fastText on the cleaned text (column chosen in params)."""
import sys
from pathlib import Path

# this script's own name would shadow the `fasttext` library: drop stages/ from the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rakuten import params as P  # noqa: E402
from rakuten.models import fasttext_model  # noqa: E402
from rakuten.models.text_runner import fit_and_report, load_text_frame  # noqa: E402
from rakuten.stage import run_stage  # noqa: E402


def main() -> None:
    cfg = fasttext_model.parse_config(P.get(P.load_params(), "fasttext"))  # validated before any work
    fit_and_report("fasttext", fasttext_model, cfg, load_text_frame())


if __name__ == "__main__":
    run_stage(main)

"""The ``rakuten`` command (console script): classify new products with the trained pipeline.

    rakuten predict --input X_new.csv --images images/ --output predictions.csv

Expected failures (bad CSV, missing artifacts) print one ``error:`` line and exit 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from rakuten.errors import PipelineError
from rakuten.logs import setup_logging

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rakuten", description="Rakuten multimodal product classification.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "predict", help="classify new products (CSV in the X_test layout + an image folder)",
        description="Classify new products with the trained models and the fused model (models/). "
                    "Writes, per input row (indexed like the input), the predicted prdtypecode, its label, "
                    "the top-3 codes with probabilities and inputs_used. A row with empty text or a missing "
                    "image is predicted from the other modality and inputs_used says so.")
    p.add_argument("--input", "-i", required=True, type=Path,
                   help="CSV in the X_test layout: <unnamed index>, designation, description, productid, imageid")
    p.add_argument("--images", required=True, type=Path,
                   help="folder with image_<imageid>_product_<productid>.jpg files")
    p.add_argument("--output", "-o", required=True, type=Path, help="CSV file to write")
    p.add_argument("--models", default=Path("models"), type=Path,
                   help="folder with the trained artifacts: <model>/ and fusion/ (default: models)")
    p.add_argument("--params", default=None, type=Path,
                   help="today's params file (default: params.yaml when present). Text and images are cleaned "
                        "as recorded with the models (<model>/preprocessing.json), never as this file says: "
                        "it only supplies the runtime knobs (processes, batch sizes), and a warning names "
                        "every text_clean / image_clean knob it changed since training")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where cleaned images are written (default: a temporary folder, removed at the end)")
    return parser


def _predict(args: argparse.Namespace) -> None:
    from rakuten.io import check_output_path, write_csv
    from rakuten.params import load_params
    from rakuten.predict import predict_csv

    check_output_path(args.output, is_dir=False)  # before any work: a directory or a FIFO there is an error
    if args.output.exists() and args.input.exists() and args.output.resolve() == args.input.resolve():
        raise PipelineError(f"{args.output}: is the input file; choose another --output")
    params_path = args.params or Path("params.yaml")
    params = load_params(params_path) if args.params is not None or params_path.is_file() else None
    if not args.images.is_dir():
        raise PipelineError(f"{args.images}: image folder not found")
    with tempfile.TemporaryDirectory(prefix="rakuten-predict-") as tmp:
        table = predict_csv(args.input, args.images, params, args.models, args.work_dir or Path(tmp),
                            params_name=str(params_path))
    write_csv(table, args.output, index=True)
    partial = int(table["inputs_used"].str.contains("only|none").sum())
    log.info("wrote %d predictions to %s (%d from one modality or none)", len(table), args.output, partial)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rakuten`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "predict":
            _predict(args)
    except PipelineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``rakuten`` command (console script): classify new products with the trained pipeline.

    rakuten predict --input X_new.csv --images images/ --output predictions.csv [--explain explanations.jsonl]
    rakuten serve [--models models] [--host 127.0.0.1] [--port 8000]

Expected failures (bad CSV, missing artifacts) print one ``error:`` line and exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
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
    p.add_argument("--explain", type=Path, default=None, metavar="FILE.jsonl",
                   help="also write, per row, why it was put in its predicted class (JSON Lines: the TF-IDF "
                        "terms, the transformer's word attributions, the image model's Grad-CAM as a PNG data URI)")
    s = sub.add_parser(
        "serve", help="serve the trained models over HTTP, with a web page to try them",
        description="Start the prediction service on the trained artifacts: GET / (web page), POST /predict "
                    "(one product), POST /predict/batch (CSV in the X_test layout + images, CSV streamed back), "
                    "GET /health, GET /metadata. Models are loaded once; cleaning follows the preprocessing "
                    "recorded with them, as in `rakuten predict`.")
    s.add_argument("--models", default=Path("models"), type=Path, help="folder with the trained artifacts (default: models)")
    s.add_argument("--params", default=None, type=Path, help="today's params file (default: params.yaml when "
                   "present); only supplies the runtime knobs, as in `rakuten predict`")
    s.add_argument("--lock", default=Path("dvc.lock"), type=Path,
                   help="dvc.lock whose recorded hashes and params /metadata reports (default: dvc.lock)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", default=8000, type=int, help="port (default: 8000)")
    from rakuten.serve import ServeLimits

    for f in dataclasses.fields(ServeLimits):
        s.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default),
                       default=f.default, help=f"{f.metadata['help']} (default: {f.default})")
    return parser


def _predict(args: argparse.Namespace) -> None:
    from rakuten.io import check_output_path, write_csv, write_text
    from rakuten.params import load_params
    from rakuten.predict import Predictor, explanation_lines

    check_output_path(args.output, is_dir=False)  # before any work: a directory or a FIFO there is an error
    if args.output.exists() and args.input.exists() and args.output.resolve() == args.input.resolve():
        raise PipelineError(f"{args.output}: is the input file; choose another --output")
    params_path = args.params or Path("params.yaml")
    params = load_params(params_path) if args.params is not None or params_path.is_file() else None
    if not args.images.is_dir():
        raise PipelineError(f"{args.images}: image folder not found")
    if args.explain is not None:
        check_output_path(args.explain, is_dir=False)
    predictor = Predictor.load(args.models, params, str(params_path))
    with tempfile.TemporaryDirectory(prefix="rakuten-predict-") as tmp:
        result = predictor.predict_csv(args.input, args.images, args.work_dir or Path(tmp))
        table = result.table
        if args.explain is not None:
            write_text(explanation_lines(predictor, result), args.explain)
    write_csv(table, args.output, index=True)
    partial = int(table["inputs_used"].str.contains("only|none").sum())
    log.info("wrote %d predictions to %s (%d from one modality or none)", len(table), args.output, partial)


def _serve(args: argparse.Namespace) -> None:
    from rakuten.params import load_params
    from rakuten.serve import ServeLimits, serve

    limits = ServeLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeLimits)})
    params_path = args.params or Path("params.yaml")
    params = load_params(params_path) if args.params is not None or params_path.is_file() else None
    if not 0 < args.port < 65536:
        raise PipelineError(f"--port {args.port}: expected 1 to 65535")
    serve(args.models, params, str(params_path), args.host, args.port, limits, args.lock)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rakuten`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "predict":
            _predict(args)
        elif args.command == "serve":
            _serve(args)
    except PipelineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

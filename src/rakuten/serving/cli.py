"""The ``rakuten`` command (console script): classify new products with the trained pipeline.

    rakuten predict --input X_new.csv --images images/ --output predictions.csv [--explain explanations.jsonl]
    rakuten predict ... --engine ray [--address local|auto|HOST:PORT] [--workers N] [--ship-models]
    rakuten serve [--models models] [--params params.yaml] [--host 127.0.0.1] [--port 8000] [--max-image-mb 10 ...]
    rakuten check [--params params.yaml] [FOLDER ...]
    rakuten compare A B [--repo .] [--resamples N] [--level L] [--seed S] [--top-classes N] [--json]

Expected failures (bad CSV, missing artifacts) print one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from rakuten.core.config import ConfigError, check_value, defaults, iter_knobs, parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.logs import setup_logging

if TYPE_CHECKING:
    from rakuten.serving.serve.limits import ServeLimits
    from rakuten.serving.stream import StreamResult

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from rakuten.serving.predict_options import add_cluster_options

    parser = argparse.ArgumentParser(prog="rakuten", description="Rakuten multimodal product classification.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_predict(sub)
    add_cluster_options(sub.choices["predict"])  # --engine ray (rakuten.serving.distributed)
    _add_serve(sub)
    _add_check(sub)
    _add_compare(sub)
    return parser


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify new products (CSV in the X_test layout + an image folder)",
        description="Classify new products with the trained models and the fused model (models/). "
        "Writes, per input row (indexed like the input), the predicted prdtypecode, its label, "
        "the top-3 codes with calibrated probabilities, inputs_used and needs_review (true when the "
        "top probability is below the review threshold chosen on validation rows). A row with empty "
        "text or a missing image is predicted from the other modality and inputs_used says so.",
    )
    p.add_argument(
        "--input",
        "-i",
        required=True,
        type=Path,
        help="CSV in the X_test layout: <unnamed index>, designation, description, productid, imageid",
    )
    p.add_argument(
        "--images", required=True, type=Path, help="folder with image_<imageid>_product_<productid>.jpg files"
    )
    p.add_argument("--output", "-o", required=True, type=Path, help="CSV file to write")
    p.add_argument(
        "--models",
        default=Path("models"),
        type=Path,
        help="folder with the trained artifacts: <model>/ and fusion/ (default: models)",
    )
    p.add_argument(
        "--params",
        default=None,
        type=Path,
        help="today's params file (default: params.yaml when present). Text and images are cleaned "
        "as recorded with the models (<model>/preprocessing.json), never as this file says: "
        "it only supplies the runtime knobs (processes, batch sizes), and a warning names "
        "every text_clean / image_clean knob it changed since training",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where cleaned images are written (default: a temporary folder, removed at the end)",
    )
    p.add_argument(
        "--lock",
        default=None,
        type=Path,
        help="dvc.lock holding the hashes every artifact is checked against before it is loaded "
        "(default: the dvc.lock of the project holding --models)",
    )
    p.add_argument(
        "--explain",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="also write, per row, why it was put in its predicted class (JSON Lines: the TF-IDF "
        "terms, the transformer's word attributions, the image model's Grad-CAM as a PNG data URI)",
    )
    from rakuten.serving.predict_options import StreamConfig

    add_knob_options(p, StreamConfig)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from rakuten.serving.serve.limits import SECTION, ServeLimits

    s = sub.add_parser(
        "serve",
        help="serve the trained models over HTTP, with a web page to try them",
        description="Start the prediction service on the trained artifacts: GET / (web page), POST /predict "
        "(one product), POST /predict/batch (CSV in the X_test layout + images, CSV streamed back), "
        "GET /health, GET /metadata. Models are loaded once; cleaning follows the preprocessing "
        "recorded with them, as in `rakuten predict`.",
    )
    s.add_argument(
        "--models", default=Path("models"), type=Path, help="folder with the trained artifacts (default: models)"
    )
    s.add_argument(
        "--params",
        default=None,
        type=Path,
        help="today's params file (default: params.yaml when present); supplies the runtime knobs, as in "
        f"`rakuten predict`, and the limits below from its section {SECTION} when present (the options "
        "given here override it)",
    )
    s.add_argument(
        "--lock",
        default=None,
        type=Path,
        help="dvc.lock holding the hashes every artifact is checked against before it is loaded, "
        "and the params /metadata reports (default: the dvc.lock of the project holding --models)",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", default=8000, type=int, help="port (default: 8000)")
    add_knob_options(s, ServeLimits)


def _add_check(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "check",
        help="check the input folders before `dvc repro` / `dvc status` (a FIFO there hangs DVC)",
        description="Walk data.raw_dir and every other dvc.yaml dependency that no stage writes, without "
        "opening any file, and refuse FIFOs, sockets, device files and symlinks that dangle or "
        "lead outside the project: DVC opens every file of a folder dependency to hash it and "
        "blocks forever, silently, on a FIFO. One error line per offending path, exit 2.",
    )
    c.add_argument(
        "--params",
        default=Path("params.yaml"),
        type=Path,
        help="params file naming data.raw_dir; its folder is the project root (default: params.yaml)",
    )
    c.add_argument(
        "folders",
        nargs="*",
        type=Path,
        metavar="FOLDER",
        help="check these files or folders instead of the dvc.yaml inputs",
    )


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from rakuten.evaluation.bootstrap import BootstrapConfig
    from rakuten.evaluation.compare import SECTION, TOP_CLASSES, WORKSPACE

    c = sub.add_parser(
        "compare",
        help="is run B better than run A? weighted F1 difference per model and fusion, with its interval",
        description="Read two runs' per-row predictions (reports/probs/<name>.parquet) on the same test rows "
        "and print, per model and for the fusion, weighted F1 in A and B, the difference B - A with its "
        "paired-bootstrap interval, and the classes whose F1 moved most. Refuses runs whose test rows or "
        f"labels differ. The bootstrap options default to the {SECTION} section of the project's params.yaml "
        "where it sets them, else to the values shown.",
    )
    for name in ("a", "b"):
        c.add_argument(
            name,
            metavar=name.upper(),
            help=f"a git revision (HEAD, a branch, a commit), a DVC experiment name, or {WORKSPACE}",
        )
    c.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: .)")
    add_knob_options(c, BootstrapConfig)
    c.add_argument(
        "--top-classes",
        type=int,
        default=TOP_CLASSES,
        help=f"classes listed per model, those whose F1 moved most (default: {TOP_CLASSES})",
    )
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")


# ------------------------------------------------------------------------------- options from knobs


def option_name(knob_name: str) -> str:
    """The command-line option of a knob: ``max_image_mb`` -> ``--max-image-mb``."""
    return "--" + knob_name.replace("_", "-")


def add_knob_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per knob of the declaration ``cls`` (:func:`rakuten.core.config.knob`), with the
    knob's help and default. The value is kept as typed: :func:`knob_options` parses and checks it
    against the same declaration, so a bad value is one error line, like a bad value in a params file."""
    declared = defaults(cls)
    for name, tp, declaration in iter_knobs(cls):
        if tp not in (int, float, str):
            raise TypeError(f"{cls.__name__}.{name}: no command-line option for a knob of type {tp}")
        parser.add_argument(
            option_name(name), dest=name, default=None, help=f"{declaration.help} (default: {declared[name]})"
        )


def knob_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The knobs of ``cls`` given on the command line (see :func:`add_knob_options`), parsed and
    checked by their declarations; a bad value is one :class:`PipelineError` line naming the option
    and what it expects (``--max-pending = 0, expected an integer in [1, inf]``)."""
    given = {}
    for name, tp, _ in iter_knobs(cls):
        text = getattr(args, name)
        if text is None:
            continue
        try:
            given[name] = check_value(cls, name, _typed(text, tp), option_name(name))
        except ConfigError as exc:
            raise PipelineError(str(exc)) from None
    return given


def _typed(text: str, tp: type) -> Any:
    """``text`` as a value of ``tp`` when it reads as one; else the text itself, which the knob's
    check then refuses, naming what it expected."""
    try:
        return tp(text)
    except ValueError:
        return text


def serve_limits(args: argparse.Namespace, params: dict | None, params_name: str) -> ServeLimits:
    """The service's limits: declared defaults, then the params file's ``serve`` section (when it has
    one), then the options given on the command line."""
    from rakuten.serving.serve.limits import SECTION, ServeLimits

    base = ServeLimits()
    if params is not None and SECTION in params:
        base = parse_section(ServeLimits, params[SECTION], SECTION, params_name)
    return dataclasses.replace(base, **knob_options(args, ServeLimits))


def _records(args: argparse.Namespace):
    """The hashes every artifact is checked against: ``--lock``, else the dvc.lock of the project holding
    ``--models`` (:mod:`rakuten.core.integrity`); read before any model loads."""
    from rakuten.core.integrity import ArtifactRecords

    return ArtifactRecords.from_lock(args.lock) if args.lock is not None else ArtifactRecords.for_path(args.models)


def _predict(args: argparse.Namespace) -> None:
    from rakuten.core.io import check_run_paths, write_text
    from rakuten.core.params import load_params
    from rakuten.serving.distributed import predict_from_args
    from rakuten.serving.predict import Predictor, explanation_lines, read_rows
    from rakuten.serving.predict_options import StreamConfig, cluster_only
    from rakuten.serving.stream import predict_file

    if not args.input.is_file():
        raise PipelineError(f"--input {args.input}: file not found")
    if not args.images.is_dir():
        raise PipelineError(f"--images {args.images}: image folder not found")
    params_path = args.params or Path("params.yaml")
    inputs = {"--input": args.input, "--images": args.images, "--models": args.models}
    inputs.update({"--params": params_path} if params_path.exists() else {})
    inputs.update({"--lock": args.lock} if args.lock is not None else {})
    outputs = {"--output": (args.output, False)}
    outputs.update({"--explain": (args.explain, False)} if args.explain is not None else {})
    outputs.update({"--work-dir": (args.work_dir / "images", True)} if args.work_dir is not None else {})
    check_run_paths(inputs, outputs)  # before any work: no output replaces an input, another output or a stranger
    params = load_params(params_path) if args.params is not None or params_path.is_file() else None
    cfg = StreamConfig(**knob_options(args, StreamConfig))
    if args.engine == "ray":  # rakuten.serving.distributed: --workers actors, --chunk-rows rows per batch
        _log_done(predict_from_args(args, params, str(params_path), cfg, lambda: _records(args)), args.output)
        return
    cluster_only(args)
    if args.explain is not None and cfg.processes() > 1:
        raise PipelineError("--explain runs in one process: leave out --workers (or give --workers 1)")
    records = _records(args)  # read and checked before minutes of loading
    # one process: the models are verified and loaded before the rows are read (a tampered file stops it first)
    predictor = Predictor.load(args.models, params, str(params_path), records=records) if cfg.processes() == 1 else None
    rows = read_rows(args.input, args.images)
    lines: list[str] = []
    explain = None if args.explain is None else (lambda result: lines.append(explanation_lines(predictor, result)))
    with tempfile.TemporaryDirectory(prefix="rakuten-predict-") as tmp:
        load = (args.models, params, str(params_path), args.lock)
        done = predict_file(predictor, rows, args.output, args.work_dir or Path(tmp), cfg, load, explain)
    if args.explain is not None:
        write_text("".join(lines), args.explain)
    _log_done(done, args.output)


def _log_done(done: StreamResult, output: Path) -> None:
    log.info(
        "wrote %d predictions to %s in %.1f s (%d from one modality or none, %d to review)",
        done.rows,
        output,
        done.seconds["predict"],
        done.partial,
        done.review,
    )


def _serve(args: argparse.Namespace) -> None:
    from rakuten.core.params import load_params
    from rakuten.serving.serve.server import serve

    params_path = args.params or Path("params.yaml")
    params = load_params(params_path) if args.params is not None or params_path.is_file() else None
    limits = serve_limits(args, params, str(params_path))
    if not 0 < args.port < 65536:
        raise PipelineError(f"--port {args.port}: expected 1 to 65535")
    # read and checked before minutes of model loading: a merge-conflicted lock fails here, in one line
    serve(args.models, params, str(params_path), args.host, args.port, limits, _records(args))


def _check(args: argparse.Namespace) -> int:
    """``rakuten check``: every offending path on its own ``error:`` line (a user fixes them all in
    one go), then exit 2; ``ok: N files checked`` otherwise."""
    from rakuten.core.config import from_params
    from rakuten.core.params import load_params
    from rakuten.data.checks import check_inputs, input_paths
    from rakuten.data.source import DataConfig

    project = args.params.parent
    if args.folders:
        paths = list(args.folders)
    else:
        params = load_params(args.params)
        raw_dir = from_params(DataConfig, params, "data", str(args.params)).raw_dir
        paths = input_paths(project, params, raw_dir)
    result = check_inputs(paths, project)
    for problem in result.problems:
        sys.stderr.write(f"error: {problem}\n")
    if result.problems:
        return 2
    log.info("ok: %d files checked (%d paths)", result.files, len(paths))
    return 0


def _compare(args: argparse.Namespace) -> None:
    """``rakuten compare``: the comparison on stdout, as text or JSON."""
    from rakuten.core.params import load_params
    from rakuten.evaluation import compare
    from rakuten.evaluation.bootstrap import BootstrapConfig

    if args.top_classes < 0:
        raise PipelineError(f"--top-classes {args.top_classes}: expected an integer >= 0")
    params_path = args.repo / "params.yaml"
    params = load_params(params_path) if params_path.is_file() else None
    cfg = dataclasses.replace(compare.configured(params, str(params_path)), **knob_options(args, BootstrapConfig))
    run_a, run_b = compare.load_run(args.repo, args.a), compare.load_run(args.repo, args.b)
    result = compare.compare_runs(run_a, run_b, cfg, args.top_classes)
    sys.stdout.write(compare.to_json(result) if args.json else compare.render(result))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rakuten`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "predict":
            _predict(args)
        elif args.command == "serve":
            _serve(args)
        elif args.command == "check":
            return _check(args)
        elif args.command == "compare":
            _compare(args)
    except PipelineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``rakuten serve``'s process: load the models once, warm them up, serve until interrupted."""

from __future__ import annotations

import logging
from pathlib import Path

from rakuten.core.integrity import ArtifactRecords
from rakuten.serving.http_guards import run_server
from rakuten.serving.predict import Predictor
from rakuten.serving.serve.app import create_app
from rakuten.serving.serve.limits import ServeLimits
from rakuten.serving.serve.metadata import model_metadata
from rakuten.serving.serve.single import predict_one

log = logging.getLogger(__package__)  # the service's logger, which run_server rate-limits


def serve(
    models_dir: Path,
    params: dict | None,
    params_name: str,
    host: str,
    port: int,
    limits: ServeLimits,
    records: ArtifactRecords | None = None,
) -> None:
    """Load the models (each checked against ``records``, default the project's dvc.lock), warm them up
    with one product, and serve until interrupted."""
    records = records or ArtifactRecords.for_path(models_dir)
    predictor = Predictor.load(models_dir, params, params_name, records=records).in_process()  # no pool per request
    predict_one(predictor, "warm-up", "", None, explain=False)  # spaCy and the first forward passes load here
    app = create_app(predictor, limits, model_metadata(predictor, records))
    log.info("serving %s on http://%s:%d", ", ".join(predictor.models.members), host, port)
    run_server(app, host, port, limits)

"""``GET /metadata``: what is served, each artifact traced to the dvc.lock entry it was checked against.

Why its own module: the answer is computed once, when the service starts (:func:`model_metadata`), from
the loaded predictor and the lock's records; the route only returns it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS
from rakuten.core.integrity import ArtifactRecords
from rakuten.serving.loaded_models import trained_model_dir
from rakuten.serving.predict import Predictor


def model_metadata(predictor: Predictor, records: ArtifactRecords | None) -> dict[str, Any]:
    """What is served: the fused strategy, its calibration and human-review threshold, each model's folder
    with the hash computed from the served files when they were loaded (checked against ``records``, the
    dvc.lock: ``verified`` true) and the params its stage ran with, the cleaning it was trained with, the
    classes."""
    models = predictor.models
    artifacts = [
        _artifact(predictor, records, name, modality)
        for name, modality in [*zip(models.fused.models, models.fused.modalities), ("fusion", "fusion")]
    ]
    summary = models.fused.summary()
    return {
        "strategy": models.fused.strategy,
        "calibration": summary["calibration"],
        "review_threshold": summary["review_threshold"],
        "models": artifacts,
        "lock_file": str(records.lock) if records is not None else None,
        "preprocessing": {section: plain(cfg) for section, cfg in predictor.sections.items()},
        "classes": [{"code": int(c), "label": CLASS_LABELS[int(c)]} for c in CLASS_CODES],
    }


def _artifact(predictor: Predictor, records: ArtifactRecords | None, name: str, modality: str) -> dict[str, Any]:
    """One served model's entry: its folder, the hash of the files served, the lock's record of it."""
    models = predictor.models
    folder = trained_model_dir(models.models_dir, name)
    found = records.recorded(folder) if records is not None else None
    stage, out = found if found is not None else (None, None)
    served = models.hashes.get(name)
    params = (records.stages[stage].get("params") or {}) if stage else {}
    return {
        "name": name,
        "modality": modality,
        "path": (records.key(folder) if records is not None else None) or str(folder.resolve()),
        "md5": served,
        "verified": bool(out) and served is not None and served == out.get("md5"),
        "dvc": (
            {"stage": stage, "md5": out.get("md5"), "size": out.get("size"), "nfiles": out.get("nfiles")}
            if out
            else None
        ),
        "params": {file: values for file, values in params.items()},
    }


def plain(cfg: Any) -> Any:
    """A section's declaration as JSON values (tuples as lists, paths as strings); anything else as is."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str)) if dataclasses.is_dataclass(cfg) else cfg

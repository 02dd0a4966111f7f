"""The image model the report explains with Grad-CAM: the registry's ``report_image`` model.

Read from :mod:`rakuten.contracts.registry` so that the evaluate stage's deps (``models/<name>``,
``reports/probs/<name>.parquet``; generated into dvc.yaml by ``tools/registry_sync.py``), the stage and
the report agree on one name.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image

from rakuten.contracts import registry
from rakuten.evaluation.report.config import Explainer

#: the image model the report explains (models/<name>, reports/probs/<name>.parquet; dvc.yaml deps)
IMAGE_MODEL = registry.report_image_model()


def image_model_explainer(model_dir: str | Path) -> Explainer:
    """Grad-CAM overlays of the trained image model at ``model_dir``, loaded on the first call only, so a
    report with ``gradcam_examples = 0`` never loads torch weights; load errors surface in that call. The
    folder is checked against the project's dvc.lock first (:mod:`rakuten.core.integrity`)."""

    @functools.lru_cache(maxsize=1)
    def model():
        from rakuten.core.integrity import verified

        return registry.load_report_image_module().load(verified(model_dir))

    def explain(image_path: str, class_index: int, size: int) -> Image.Image:
        from rakuten.evaluation import gradcam as cam

        heat = cam.gradcam(model(), image_path, class_index)
        return cam.overlay(image_path, heat, size=size)

    return explain

"""Prediction with the trained artifacts: the submission file and batch prediction on new products.

Both paths go through the same saved fused model (``models/fusion/``), so the submission and the
``rakuten predict`` command give the same answer for the same inputs: new rows become catalog rows
with ingest's own function, are cleaned with the text/image sections recorded with the trained
models (:mod:`rakuten.contracts.preprocessing`, never today's ``params.yaml``), and the models' probabilities
go through the same float32 tables' rounding as in the pipeline. A product with empty text or a
missing image is still classified, from the models whose input it has (see
:class:`rakuten.fusion.model.FusedModel`), and the ``inputs_used`` column says so. The probabilities are
the fused model's calibrated ones, and ``needs_review`` flags a row whose top probability is below the
review threshold chosen on validation rows (:mod:`rakuten.fusion.review`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from rakuten.contracts import preprocessing
from rakuten.contracts.classes import CLASS_LABELS, indices_to_codes
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords
from rakuten.data.ingest import X_COLUMNS, catalog_rows, read_official_csv
from rakuten.fusion.model import FusedModel
from rakuten.serving.loaded_models import LoadedModels, timed, trained_model_dir

log = logging.getLogger(__name__)

TOP_K = 3


def prediction_table(
    orig_index: np.ndarray,
    proba: np.ndarray,
    inputs_used: list[str],
    k: int = TOP_K,
    needs_review: np.ndarray | None = None,
) -> pd.DataFrame:
    """Predicted code and label, the top-``k`` codes with (calibrated) probabilities, the inputs used, and
    whether the row needs a human review (:meth:`FusedModel.needs_review`; all False when not given), per row."""
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    codes = indices_to_codes(order)
    out = pd.DataFrame(
        {"prdtypecode": codes[:, 0], "label": [CLASS_LABELS[int(c)] for c in codes[:, 0]]},
        index=pd.Index(np.asarray(orig_index, dtype=np.int64), name=None),
    )
    for j in range(k):
        out[f"top{j + 1}_code"] = codes[:, j]
        out[f"top{j + 1}_proba"] = np.round(np.take_along_axis(proba, order[:, j : j + 1], axis=1)[:, 0], 6)
    out["inputs_used"] = inputs_used
    out["needs_review"] = np.zeros(len(out), bool) if needs_review is None else np.asarray(needs_review, dtype=bool)
    return out


@dataclass
class Cleaners:
    """The cleaning functions of the text and image stages and their sections' declarations
    (injectable for tests)."""

    text: Callable[[pd.DataFrame, Any], pd.DataFrame]  # (rows, parsed text_clean config)
    image: Callable[..., pd.DataFrame]  # (rows, out_dir, parsed image_clean config, labels_split)
    configs: dict[str, type]  # section -> its declaration (rakuten.core.config)


def default_cleaners() -> Cleaners:
    """The pipeline's own cleaning (``rakuten.text.text_clean`` / ``rakuten.image.image_clean``) and declarations."""
    try:
        from rakuten.image.config import ImageCleanConfig
        from rakuten.image.image_clean import clean_frame as clean_images
        from rakuten.text.text_clean import TextCleanConfig
        from rakuten.text.text_clean import clean_frame as clean_text
    except ImportError as exc:
        raise PipelineError(f"cannot import the cleaning stages ({exc}); is the package fully installed?") from None
    return Cleaners(
        text=clean_text, image=clean_images, configs={"text_clean": TextCleanConfig, "image_clean": ImageCleanConfig}
    )


def trained_preprocessing(
    models_dir: Path, model: FusedModel, params: dict | None, params_name: str, cleaners: Cleaners
) -> dict[str, Any]:
    """The parsed ``text_clean`` / ``image_clean`` configs the fused models were trained with.

    Read from ``models/<name>/preprocessing.json`` (all models must agree), parsed with the
    sections' declarations (errors name that file). ``params`` (today's params file, None when
    absent) is only compared with them (one warning names each changed knob) and supplies the
    runtime knobs the records leave out (processes, batch sizes; else their declared defaults).
    """
    for name in model.models:
        trained_model_dir(models_dir, name)
    trained, sources = preprocessing.load_trained(models_dir, dict(zip(model.models, model.modalities)))
    if params is None:
        log.info(
            "%s not found: preprocessing as recorded with the models, runtime knobs at their defaults", params_name
        )
    else:
        preprocessing.warn_if_changed(trained, params, params_name, cleaners.configs)
    sections = preprocessing.with_runtime(trained, params or {}, cleaners.configs)
    return {
        section: parse_section(cleaners.configs[section], values, section, source=str(sources[section]))
        for section, values in sections.items()
    }


def model_frame(
    rows: pd.DataFrame,
    sections: dict[str, Any],
    work_dir: Path,
    cleaners: Cleaners,
    times: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Catalog rows joined with the text and image cleaning columns, as the models expect them.

    ``sections`` holds the parsed ``text_clean`` / ``image_clean`` configs the models were trained
    with; a modality no fused model reads (no section) is not cleaned. New rows have no labels: the
    image cleaning skips the duplicate hashing, which only serves the training policy.
    """
    frame, times = rows, {} if times is None else times
    if "text_clean" in sections:
        with timed(times, "text_clean"):
            text = cleaners.text(rows, sections["text_clean"])
        frame = frame.merge(text, on="row_id", how="left", validate="one_to_one")
    if "image_clean" in sections:
        with timed(times, "image_clean"):
            images = cleaners.image(rows, Path(work_dir) / "images", sections["image_clean"], None)
        frame = frame.merge(images, on="row_id", how="left", validate="one_to_one")
    if len(frame) != len(rows):
        raise PipelineError(f"cleaning returned {len(frame)} rows for {len(rows)} inputs")
    return frame


@dataclass
class Prediction:
    """One call's result: the cleaned model frame, the fused probabilities and the output table."""

    frame: pd.DataFrame
    proba: np.ndarray
    table: pd.DataFrame


@dataclass
class Predictor:
    """Everything ``rakuten predict`` and ``rakuten serve`` need, loaded once: the models (with their
    encoders), the cleaning sections they were trained with and the cleaning functions.

    Calls are serialised by a lock: the models, spaCy and the thread pools they use are shared, and
    on a CPU one prediction at a time already keeps the cores busy.
    """

    models: LoadedModels
    sections: dict[str, Any]
    cleaners: Cleaners
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(
        cls,
        models_dir: str | Path = "models",
        params: dict | None = None,
        params_name: str = "params.yaml",
        cleaners: Cleaners | None = None,
        records: ArtifactRecords | None = None,
    ) -> "Predictor":
        """Load the fused model under ``models_dir``; cleaning follows the preprocessing recorded with
        the models, ``params`` (today's params file, None when there is none) is only checked against
        it and supplies the runtime knobs (see :func:`trained_preprocessing`). Every artifact is checked
        against ``records`` (default: the dvc.lock of the project holding ``models_dir``) first."""
        cleaners = cleaners or default_cleaners()
        models_dir = Path(models_dir)
        records = records or ArtifactRecords.for_path(models_dir)
        models = LoadedModels.load(models_dir, None, records)  # verified before anything is read from them
        sections = trained_preprocessing(models_dir, models.fused, params, params_name, cleaners)
        return cls(models, sections, cleaners)

    def in_process(self) -> "Predictor":
        """This predictor with the cleaning's worker processes off (``n_jobs`` 1, one spaCy process).

        For a long-lived service: a pool forked per request from a process that runs torch and server
        threads copies the whole loaded process and can deadlock on a lock some thread held at fork time.
        Runtime knobs only, so the predictions are the same."""
        sections = dict(self.sections)
        for name, cfg in sections.items():
            if hasattr(cfg, "n_jobs"):
                cfg = dataclasses.replace(cfg, n_jobs=1)
            if hasattr(getattr(cfg, "normalise", None), "n_jobs"):
                cfg = dataclasses.replace(cfg, normalise=dataclasses.replace(cfg.normalise, n_jobs=1))
            sections[name] = cfg
        return Predictor(self.models, sections, self.cleaners)

    def predict_rows(self, rows: pd.DataFrame, work_dir: str | Path) -> Prediction:
        """Clean catalog rows (:func:`rakuten.data.ingest.catalog_rows`) as the models were trained
        (cleaned images go under ``work_dir``) and predict them."""
        with self.lock:
            frame = model_frame(rows, self.sections, Path(work_dir), self.cleaners, self.models.times)
            proba, inputs = self.models.predict_proba(frame)
        review = self.models.fused.needs_review(proba)
        return Prediction(
            frame, proba, prediction_table(rows["orig_index"].to_numpy(), proba, inputs, needs_review=review)
        )

    def explain(self, row: pd.Series, class_index: int, k: int = 10) -> dict[str, dict]:
        """Why ``row`` (one row of :attr:`Prediction.frame`) was put in class ``class_index``, per model
        that can say (:func:`rakuten.evaluation.explain.explain_frame_row`)."""
        from rakuten.evaluation.explain import explain_frame_row

        with self.lock:
            return explain_frame_row(self.models.members, row, class_index, k)

    def predict_csv(self, x_csv: str | Path, image_dir: str | Path, work_dir: str | Path) -> Prediction:
        """Classify the products of a CSV in the X_test layout whose images are in ``image_dir``."""
        return self.predict_rows(read_rows(x_csv, image_dir), work_dir)


def read_products(x_csv: str | Path) -> pd.DataFrame:
    """The rows of a CSV in the X_test layout (:func:`rakuten.data.ingest.read_official_csv`); an empty
    file is one line."""
    x = read_official_csv(Path(x_csv), X_COLUMNS)
    if len(x) == 0:
        raise PipelineError(f"{x_csv}: no rows to classify")
    return x


def read_rows(x_csv: str | Path, image_dir: str | Path) -> pd.DataFrame:
    """The catalog rows of a CSV in the X_test layout (``row_id`` from 0, images looked up in ``image_dir``)."""
    rows, _ = catalog_rows(read_products(x_csv), Path(x_csv), image_dir)
    log.info("%d products, %d without a readable image file", len(rows), int((~rows["image_ok"]).sum()))
    return rows


def explanation_lines(predictor: Predictor, result: Prediction, k: int = 10) -> str:
    """``rakuten predict --explain``: one JSON line per row, in the table's order: its index, predicted
    code and the explanations of :meth:`Predictor.explain` for that class."""
    lines = []
    rows = tqdm(range(len(result.table)), desc="explain", unit="row", disable=len(result.table) < 20)
    for i in rows:
        index = int(np.argmax(result.proba[i]))
        lines.append(
            json.dumps(
                {
                    "index": int(result.table.index[i]),
                    "prdtypecode": int(result.table["prdtypecode"].iloc[i]),
                    "explanations": predictor.explain(result.frame.iloc[i], index, k),
                },
                ensure_ascii=False,
                sort_keys=True,
            )
        )
    return "".join(line + "\n" for line in lines)


def predict_csv(
    x_csv: str | Path,
    image_dir: str | Path,
    params: dict | None,
    models_dir: str | Path,
    work_dir: str | Path,
    cleaners: Cleaners | None = None,
    params_name: str = "params.yaml",
    records: ArtifactRecords | None = None,
) -> pd.DataFrame:
    """Classify the products of a CSV in the X_test layout whose images are in ``image_dir``
    (the ``rakuten predict`` table; see :meth:`Predictor.load` for ``params`` and ``records``)."""
    predictor = Predictor.load(models_dir, params, params_name, cleaners, records)
    return predictor.predict_csv(x_csv, image_dir, work_dir).table

"""``label_audit``: the declaration of the label audit's params.yaml section (:mod:`rakuten.core.config`).

Kept apart so that whatever reads the params (the stage, the params schema, ``tools/params_yaml``) loads the
declaration alone, not cleanlab and the models.
"""

from __future__ import annotations

from dataclasses import dataclass

from rakuten.core.config import invalid, knob
from rakuten.core.parallel import worker_count

#: the models the audit can cross-fit: the two cheap text models (each with its own params section) and a
#: cheap image classifier of its own (:mod:`.image_features`); the deep models cost too much to fit K times
AUDIT_MODELS = ("tfidf_svm", "fasttext", "image_features")
#: what each model reads: geometric pooling averages the models of one view, then multiplies the views
VIEWS = {"tfidf_svm": "text", "fasttext": "text", "image_features": "image"}
#: cleanlab.filter.find_label_issues' filter_by values
FILTERS = (
    "low_self_confidence",
    "low_normalized_margin",
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
)
POOLING = ("geometric", "mean")
POLICIES = ("keep", "drop")


@dataclass(frozen=True)
class LabelAuditConfig:
    """``label_audit``: out-of-fold probabilities of the train rows, confident learning, a policy for the flags."""

    models: tuple[str, ...] = knob(
        AUDIT_MODELS,
        "models cross-fitted on the train rows; the image model is what tells a mislabelled row from one whose "
        "text borrows a neighbour class's words (sample: text only, precision 0.25; with it, 0.77)",
        choices=AUDIT_MODELS,
        nonempty=True,
    )
    pooling: str = knob(
        "geometric",
        "how the models' probabilities are pooled: geometric (mean within a view, text or image, then the "
        "normalised product of the views: another class wins only where every view backs it) | mean",
        choices=POOLING,
    )
    folds: int = knob(5, "cross-fitting folds (duplicate groups kept in one fold)", lo=2, hi=50)
    seed: int = knob(42, "seed of the folds", lo=0)
    filter_by: str = knob(
        "low_self_confidence",
        "cleanlab.filter.find_label_issues: how many rows (cleanlab's noise estimate) and which ones",
        choices=FILTERS,
    )
    label_noise: str = knob(
        "keep",
        "what model stages do with flagged train rows: keep | drop (split 'dropped' in "
        "data/interim/training_split.parquet)",
        choices=POLICIES,
    )

    n_jobs: int = knob(
        2,
        "processes for the image features and the cross-fitting folds (0 = one per core; in-process below 2,000 "
        "train rows): each image and each fold is computed alone, so the results are the same whatever the count",
        lo=0,
        hi=256,
        runtime=True,
    )

    def processes(self) -> int:
        """Worker processes: ``n_jobs``, or one per core for 0."""
        return worker_count(self.n_jobs)

    def validate(self, key: str) -> None:
        if len(set(self.models)) != len(self.models):
            raise invalid(f"{key}.models", list(self.models), "distinct names")

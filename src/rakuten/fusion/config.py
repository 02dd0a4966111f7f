"""``fusion``: the declaration of the fusion stage's params.yaml section (:mod:`rakuten.core.config`).

Which models are fused and their soft-vote weights default to the registry
(:mod:`rakuten.contracts.registry`: every registered model, each with its ``weight``), so a new model is
fused without an edit here.
"""

from __future__ import annotations

from dataclasses import dataclass

from rakuten.contracts import registry
from rakuten.core.config import ConfigError, invalid, knob
from rakuten.fusion.calibration import METHODS as CALIBRATION_METHODS
from rakuten.fusion.meta import META_LEARNERS, LinearSvmMeta, LogregMeta, XgboostMeta
from rakuten.fusion.strategies import STRATEGIES


@dataclass(frozen=True)
class FusionConfig:
    """``fusion``: late fusion of the models' probabilities; every strategy is fitted on val only."""

    models: tuple[str, ...] = knob(
        tuple(registry.MODELS),
        "which reports/probs/<name>.parquet to fuse (any subset of the registered models)",
        nonempty=True,
    )
    strategy: str = knob(
        "auto",
        "auto = best out-of-fold val weighted F1; or force one of " + ", ".join(STRATEGIES),
        choices=("auto", *STRATEGIES),
    )
    weights: dict[str, float] = knob(
        registry.default_weights(),
        "soft_vote weights per model (renormalised over fusion.models); study: 0.6 "
        "text / 0.4 image; joint (both at once) gets the largest single share",
        lo=0.0,
    )
    weight_step: float = knob(
        0.1,
        "soft_vote_fit: simplex grid step of the weights searched on val (must divide 1)",
        lo=0.0,
        hi=1.0,
        lo_open=True,
    )
    voting_stacking_meta: str = knob(
        "xgboost", "meta-learner of voting_stacking: logreg, linear_svm or xgboost", choices=META_LEARNERS
    )
    calibration: str = knob(
        "auto",
        "calibrator of the fused probabilities, fitted on val: auto = lowest cross-fitted val log loss "
        "among none, temperature (one T) and vector_scaling (per-class scale and bias)",
        choices=("auto", *CALIBRATION_METHODS),
    )
    cv_folds: int = knob(
        5, "out-of-fold val score of each strategy and calibrator (duplicate groups kept in one fold)", lo=2
    )
    seed: int = knob(42, "seed of the CV folds and the meta-learners", lo=0)
    n_jobs: int = knob(
        1,
        "XGBoost threads; keep 1: with more the result depends on the thread count, and "
        "OpenMP spin-waits made 2 threads 14x slower on a shared 2-core box",
        lo=1,
    )
    workers: int = knob(
        2,
        "processes fitting the strategies and their CV folds side by side (0 = one per core; in-process below "
        "2,000 val rows): every fit is independent and single-threaded, so the results are the same whatever the count",
        lo=0,
        hi=256,
        runtime=True,
    )
    logreg: LogregMeta = knob(LogregMeta(), "stacking_logreg meta-learner")
    linear_svm: LinearSvmMeta = knob(LinearSvmMeta(), "stacking_linear_svm meta-learner")
    xgboost: XgboostMeta = knob(XgboostMeta(), "stacking_xgboost meta-learner (the study's best)")

    @property
    def model_weights(self) -> list[float]:
        """The soft-vote weights of :attr:`models`, in their order."""
        return [self.weights[m] for m in self.models]

    def validate(self, key: str) -> None:
        known = registry.MODELS
        if len(set(self.models)) != len(self.models) or any(m not in known for m in self.models):
            raise invalid(
                f"{key}.models", list(self.models), f"a non-empty list of distinct names from {', '.join(known)}"
            )
        missing = [m for m in self.models if m not in self.weights]
        if missing:
            raise ConfigError(f"missing key {key}.weights.{missing[0]} (a weight for each of {key}.models)")
        if sum(self.model_weights) <= 0:
            raise ConfigError(
                f"{key}.weights of the models in {key}.models sum to 0; expected at least one positive weight"
            )
        if abs(round(1 / self.weight_step) * self.weight_step - 1) > 1e-9:
            raise invalid(f"{key}.weight_step", self.weight_step, "a step that divides 1 (0.1, 0.05)")

"""DVC stage of a registered text model without a script of its own: ``python stages/model.py <name>``.

Why: adding a model is its module, its registry entry and its dvc.yaml stage (docs/adding-a-model.md);
the stage runs this script with the model's name. It reads section ``<name>`` of params.yaml into the
declaration ``ModelSpec.config`` names, trains the module (``train / predict_proba / save / load``) on
``split == train`` of the cleaned text, and writes ``models/<name>/`` (with the text_clean record
``rakuten predict`` cleans new products with), ``reports/probs/<name>.parquet``,
``reports/per_class/<name>.csv`` and ``reports/metrics/<name>.json``. A model with outputs of its own
(top terms, learning curves) or another input keeps a ``stages/<name>.py`` like ``stages/tfidf_svm.py``.
"""

import sys

from rakuten.contracts import registry
from rakuten.contracts.preprocessing import load_records, save_with_model
from rakuten.core.config import from_params
from rakuten.core.errors import PipelineError
from rakuten.core.params import load_params
from rakuten.core.stage import run_stage
from rakuten.models.runner import fit_and_report, load_text_frame


def main() -> None:
    if len(sys.argv) != 2:
        raise PipelineError("usage: python stages/model.py <name>, the name of a registered model")
    name = sys.argv[1]
    spec = registry.spec(name)
    if spec.modality != "text":
        raise PipelineError(
            f"model {name}: modality {spec.modality}; stages/model.py trains text models, "
            f"write stages/{name}.py for it (as stages/resnet50.py)"
        )
    module = registry.load_module(name)
    declaration = getattr(module, spec.config, None) if spec.config else None
    if declaration is None:
        raise PipelineError(
            f"model {name}: {spec.module} has no class {spec.config or '(ModelSpec.config is empty)'}; "
            "expected ModelSpec.config to name the declaration of its params.yaml section"
        )
    cfg = from_params(declaration, load_params(), name)  # validated before any work
    trained_on = load_records(["text_clean"])  # data/processed/text_clean.json
    fit_and_report(name, module, cfg, load_text_frame())
    save_with_model(f"models/{name}", trained_on)  # read back by `rakuten predict`


if __name__ == "__main__":
    run_stage(main)

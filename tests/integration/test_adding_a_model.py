"""Adding a model is three edits (docs/adding-a-model.md): its module, its registry entry, its dvc.yaml stage.

The three code blocks of the doc are applied, as they are, to a copy of the tiny built project; then the
generators run (``tools.registry_sync``, ``tools.import_closure``, and the params regeneration below), `dvc
repro` rebuilds what changed and `rakuten predict` runs from the copy. The toy model must have been trained,
fused, scored and used, and no other source file changed. The copy's own ``src/`` is imported (``PYTHONPATH``,
:func:`tests.helpers.dvc_repo.sh`), as the editable install imports a user's checkout: a new file under
``src/rakuten/models/`` is importable by its dotted name with nothing installed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.helpers.dvc_repo import copy_built_repo, dvc, git, predict_cli, sh
from tests.helpers.stagerun import REPO

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "adding-a-model.md"
BLOCK = re.compile(r'```\w+ title="([^"]+)"\n(.*?)```', re.S)
#: the end of the registry's MODELS tuple, where the doc's entry goes
MODELS_END = "        ),\n    )\n}\n"
#: params.yaml is generated from the declarations (`python -m tools.params_yaml --write`); on the copy, whose
#: params.yaml holds the tiny profile, only what the registry entry changes is regenerated: the toy section and
#: fusion.models / fusion.weights, at their declared defaults (registry-derived)
REGENERATE_PARAMS = """
import yaml
from rakuten.contracts import registry
from rakuten.core.config import defaults
from rakuten.fusion.config import FusionConfig
params = yaml.safe_load(open("params.yaml"))
declared = defaults(FusionConfig)
params["fusion"]["models"], params["fusion"]["weights"] = declared["models"], declared["weights"]
for name, spec in registry.MODELS.items():
    params.setdefault(name, defaults(getattr(registry.load_module(name), spec.config)))
open("params.yaml", "w").write(yaml.safe_dump(params, sort_keys=False))
"""


def doc_blocks() -> dict[str, str]:
    """The doc's code blocks by the file they go to (the first word of their title)."""
    return {title.split()[0]: body for title, body in BLOCK.findall(DOC.read_text(encoding="utf-8"))}


def add_the_toy_model(root: Path) -> None:
    """The three edits, exactly as the doc shows them."""
    blocks = doc_blocks()
    assert set(blocks) == {"src/rakuten/models/toy.py", "src/rakuten/contracts/registry.py", "dvc.yaml"}
    (root / "src/rakuten/models/toy.py").write_text(blocks["src/rakuten/models/toy.py"], encoding="utf-8")
    registry = root / "src/rakuten/contracts/registry.py"
    text = registry.read_text(encoding="utf-8")
    assert text.count(MODELS_END) == 1, "the doc's entry goes at the end of MODELS"
    entry = blocks["src/rakuten/contracts/registry.py"]
    registry.write_text(text.replace(MODELS_END, "        ),\n" + entry + "    )\n}\n"), encoding="utf-8")
    dvc_yaml = root / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text(encoding="utf-8") + "\n" + blocks["dvc.yaml"], encoding="utf-8")


@pytest.fixture(scope="module")
def repo(tiny_built_repo, tmp_path_factory) -> Path:
    root = copy_built_repo(tiny_built_repo, tmp_path_factory.mktemp("toy") / "repo")
    add_the_toy_model(root)
    sh([sys.executable, "-m", "tools.registry_sync", "--write"], root)
    sh([sys.executable, "-m", "tools.import_closure", "--write"], root)
    sh([sys.executable, "-c", REGENERATE_PARAMS], root)
    dvc("repro", "evaluate", "submission", cwd=root)
    return root


def test_only_the_three_edits_changed_source_files(repo):
    changed = git("status", "--porcelain", "--untracked-files=all", cwd=repo).stdout.splitlines()
    paths = {line[3:] for line in changed}
    code = {p for p in paths if p.split("/")[0] in ("src", "stages", "tools", "tests", "bench")}
    assert code == {"src/rakuten/models/toy.py", "src/rakuten/contracts/registry.py"}
    assert {"dvc.yaml", "params.yaml", "dvc.lock"} <= paths


def test_the_generated_parts_follow_the_rules_on_the_copy(repo):
    checks = """
from tools import registry_sync
from tools.import_closure import Project, compare, registered_models
assert compare() == {}, compare()
executed = Project().stage_modules("stages/model.py", "toy")
models = set(registered_models(Project()).values())
assert "rakuten.models.toy" in executed and not (executed & models) - {"rakuten.models.toy"}, executed & models
assert registry_sync.main([]) == 0
"""
    sh([sys.executable, "-c", checks], repo)
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    assert spec["artifacts"]["toy"]["labels"] == ["text"]
    for stage in ("fusion", "evaluate", "submission"):
        assert "reports/probs/toy.parquet" in spec["stages"][stage]["deps"], stage


def test_the_toy_model_was_trained_fused_and_scored(repo):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    toy_probs = next(o for o in lock["toy"]["outs"] if o["path"] == "reports/probs/toy.parquet")
    for stage in ("fusion", "evaluate", "submission"):
        dep = next(d for d in lock[stage]["deps"] if d["path"] == "reports/probs/toy.parquet")
        assert dep["md5"] == toy_probs["md5"], stage  # each ran on the toy's current table
    assert (repo / "models/toy/model.joblib").is_file() and (repo / "models/toy/preprocessing.json").is_file()
    fusion = json.loads((repo / "reports/fusion.json").read_text())
    assert fusion["models"][-1] == "toy" and fusion["modalities"][-1] == "text"
    assert "toy" in fusion["fallback_weights"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["fusion"]["weights"]["toy"] == 0.1 and params["toy"]["text_column"] == "text_norm"
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    scores = ("weighted_f1", "macro_f1", "accuracy")
    assert set(metrics["test"]["toy"]) == {f"{k}{s}" for k in scores for s in ("", "_low", "_high")}
    assert 0 < metrics["test"]["toy"]["weighted_f1"] <= 1
    pairs = pd.read_csv(repo / "reports/plots/confusion_toy.csv")
    assert list(pairs.columns) == ["actual", "predicted"] and len(pairs) > 0
    results = (repo / "reports/results.md").read_text()
    assert "| toy | model |" in results and "the example of docs/adding-a-model.md" in results
    assert "<td>toy</td>" in (repo / "reports/report.html").read_text()
    assert json.loads(dvc("status", "--json", cwd=repo).stdout) == {}


def test_a_forced_rerun_of_the_toy_stage_gives_the_same_bytes(repo):
    """The doc's module saves the same model as the same bytes: retraining it reruns nothing downstream."""

    def outs() -> dict[str, str]:
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["toy"]
        return {o["path"]: o["md5"] for o in lock["outs"]}

    before = outs()
    assert "Running stage 'toy'" in dvc("repro", "--force", "--single-item", "toy", cwd=repo).stdout
    assert outs() == before
    assert json.loads(dvc("status", "--json", cwd=repo).stdout) == {}  # fusion and the rest: still up to date


def test_rakuten_predict_uses_the_toy_model(repo, tmp_path):
    out = tmp_path / "predictions.csv"
    result = predict_cli(repo, out)
    assert "predicting with toy" in result.stderr, result.stderr[-2000:]
    # the fused probabilities of the X_test rows, which the toy model is part of, to the CSV's 6 decimals
    pred = pd.read_csv(out, index_col=0)
    catalog = pd.read_parquet(repo / "data/interim/catalog.parquet")
    fused = pd.read_parquet(repo / "reports/probs/fusion.parquet")
    fused = (
        fused[fused["split"] == "official_test"]
        .merge(catalog[["row_id", "orig_index"]], on="row_id")
        .set_index("orig_index")
        .loc[pred.index]
    )
    expected = [fused.at[i, f"p_{code}"] for i, code in zip(pred.index, pred["top1_code"])]
    np.testing.assert_allclose(pred["top1_proba"].to_numpy(), expected, rtol=0, atol=1e-6)
    submission = pd.read_csv(repo / "reports/submission.csv", index_col=0)
    assert pred.loc[submission.index, "prdtypecode"].tolist() == submission["prdtypecode"].tolist()

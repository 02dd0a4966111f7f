"""Evaluation of every model and fusion strategy; the evaluate stage (the DVC-level `dvc metrics diff` check
is in test_pipeline_dvc.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from rakuten.contracts import registry
from rakuten.contracts.classes import CLASS_CODES
from rakuten.evaluation import evaluate as E
from rakuten.fusion import fusion
from rakuten.fusion.strategies import STRATEGIES
from tests.helpers.fusion_fakes import ALL, FIRST_HALF, SECOND_HALF, make_tables, small_config, write_stage_inputs
from tests.helpers.stagerun import REPO, run_stage_script

# every registered model (the evaluate stage scores them all): what each one knows; the others (fasttext, joint,
# any model registered later) are useless here, and fusion must still win
KNOWS = {"tfidf_svm": FIRST_HALF, "camembert": ALL, "resnet50": SECOND_HALF}
MODELS = {name: KNOWS.get(name) for name in registry.MODELS}
MODALITIES = [registry.spec(name).modality for name in MODELS]
FAST = {"fusion.cv_folds": 3, "fusion.xgboost.n_estimators": 8, "fusion.n_jobs": 1}


@pytest.fixture(scope="module")
def evaluated():
    tables, _ = make_tables(MODELS, per_class=8, strength=2.5)
    result = fusion.fuse_tables(tables, MODALITIES, small_config(list(tables)))
    preds = E.labelled_predictions(tables, result.table, result.predictions)
    return tables, result, preds, E.evaluate_predictions(preds)


def test_every_model_and_strategy_is_scored_on_test(evaluated):
    tables, result, preds, (table, per_class, confusion) = evaluated
    expected = {*tables, "fusion", *(f"fusion_{s}" for s in STRATEGIES)}
    assert set(table["name"]) == expected == set(per_class) == set(confusion)
    n_test = int((tables["tfidf_svm"]["split"] == "test").sum())
    for name in expected:
        assert len(confusion[name]) == n_test
        assert list(confusion[name].columns) == ["actual", "predicted"]
        assert per_class[name]["prdtypecode"].tolist() == list(CLASS_CODES)
    fused = table.set_index("name")
    chosen = f"fusion_{result.model.strategy}"
    assert fused.loc["fusion", "test_weighted_f1"] == fused.loc[chosen, "test_weighted_f1"]
    # the chosen fusion's val score in the table is its out-of-fold score from fusion
    comp = result.comparison.set_index("strategy")
    assert fused.loc[chosen, "val_weighted_f1"] == comp.loc[result.model.strategy, "val_cv_weighted_f1"]


def test_confusion_pairs_agree_with_confusion_table():
    y = np.array([10, 10, 40, 2905])
    p = np.array([10, 40, 40, 10])
    pairs = E.confusion_pairs(y, p)
    counts = pairs.value_counts().to_dict()
    table = E.confusion_table(y, p)
    for (actual, predicted), n in counts.items():
        assert table.loc[actual, predicted] == n


def test_summary_metrics_and_gain(evaluated):
    *_, (table, _, _) = evaluated
    summary = E.summary_metrics(table)
    assert set(summary["test"]["camembert"]) == {"weighted_f1", "macro_f1", "accuracy"}
    assert set(summary["test"]["fusion_max_rule"]) == {"weighted_f1"}
    best = max(summary["test"][m]["weighted_f1"] for m in MODELS)
    assert summary["fusion_gain_over_best_model"] == pytest.approx(summary["test"]["fusion"]["weighted_f1"] - best)
    assert summary["fusion_gain_over_best_model"] > 0  # complementary models: fusion must win


def test_results_markdown_puts_study_figures_beside_models(evaluated):
    _, result, _, (table, _, _) = evaluated
    md = E.results_markdown(table, "sample", {"val": 216, "test": 216}, result.model.strategy)
    assert "synthetic sample catalog" in md
    assert "| camembert | model |" in md and "0.8859" in md and "0.9002" in md and "0.5978" in md
    assert f"**fusion_{result.model.strategy}**" in md
    assert "vs best single model" in md
    assert "real challenge files" in E.results_markdown(table, "raw", {"test": 216}, result.model.strategy)


@pytest.mark.slow
def test_stage_chain_fusion_then_evaluate(tmp_path):
    tables, _ = make_tables(MODELS, per_class=8, strength=2.5)
    write_stage_inputs(tmp_path, tables)
    assert run_stage_script("fusion", tmp_path, FAST).returncode == 0
    result = run_stage_script("evaluate", tmp_path, FAST)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert "fusion" in metrics["test"] and "resnet50" in metrics["test"]
    for name in [*MODELS, "fusion", *(f"fusion_{s}" for s in STRATEGIES)]:
        pairs = pd.read_csv(tmp_path / f"reports/plots/confusion_{name}.csv")
        assert list(pairs.columns) == ["actual", "predicted"] and len(pairs) == 8 * 27
        assert (tmp_path / f"reports/evaluation/per_class_{name}.csv").is_file()
    assert "study weighted F1" in (tmp_path / "reports/results.md").read_text()
    # the image model left out of fusion: still scored, and every declared plot is written (DVC needs them all)
    text_only = {**FAST, "fusion.models": ["tfidf_svm", "fasttext", "camembert"]}
    (tmp_path / "reports/plots/confusion_resnet50.csv").unlink()
    assert run_stage_script("fusion", tmp_path, text_only).returncode == 0
    result = run_stage_script("evaluate", tmp_path, text_only)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reports/plots/confusion_resnet50.csv").is_file()
    assert "resnet50" in json.loads((tmp_path / "reports/metrics.json").read_text())["test"]


def test_declared_plots_match_the_files_evaluate_writes():
    """dvc.yaml lists plots statically: they must be exactly the names evaluate produces."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {next(iter(p)) for p in stages["evaluate"]["plots"]}
    names = [*registry.MODELS, "fusion", *(f"fusion_{s}" for s in STRATEGIES)]
    confusions = {f"reports/plots/confusion_{n}.csv" for n in names}
    assert declared == confusions | {"reports/plots/risk_coverage.csv"}
    for p in stages["evaluate"]["plots"]:
        path, props = next(iter(p.items()))
        if path in confusions:
            assert props["template"] == "confusion" and {props["x"], props["y"]} == {"actual", "predicted"}
        else:  # the columns evaluate writes (rakuten.evaluation.reliability.risk_coverage_points)
            assert (props["x"], props["y"]) == ("coverage", "precision")

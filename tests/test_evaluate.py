"""Evaluation of every model and fusion strategy; the evaluate stage; `dvc metrics diff` on a param change."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fusion_fakes import ALL, FIRST_HALF, SECOND_HALF, make_tables, small_config, write_stage_inputs
from rakuten import evaluate as E
from rakuten import fusion
from rakuten.classes import CLASS_CODES
from stagerun import REPO, default_params, run_stage_script, with_overrides

FOUR = {"tfidf_svm": FIRST_HALF, "fasttext": None, "camembert": ALL, "resnet50": SECOND_HALF}
FAST = {"fusion.cv_folds": 3, "fusion.xgboost.n_estimators": 8, "fusion.n_jobs": 1}


@pytest.fixture(scope="module")
def evaluated():
    tables, _ = make_tables(FOUR, per_class=8, strength=2.5)
    result = fusion.fuse_tables(tables, ["text", "text", "text", "image"], small_config(list(tables)))
    preds = E.labelled_predictions(tables, result.table, result.predictions)
    return tables, result, preds, E.evaluate_predictions(preds)


def test_every_model_and_strategy_is_scored_on_test(evaluated):
    tables, result, preds, (table, per_class, confusion) = evaluated
    expected = {*tables, "fusion", *(f"fusion_{s}" for s in fusion.STRATEGIES)}
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
    best = max(summary["test"][m]["weighted_f1"] for m in FOUR)
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


def test_stage_chain_fusion_then_evaluate(tmp_path):
    tables, _ = make_tables(FOUR, per_class=8, strength=2.5)
    write_stage_inputs(tmp_path, tables)
    assert run_stage_script("fusion", tmp_path, FAST).returncode == 0
    result = run_stage_script("evaluate", tmp_path, FAST)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert "fusion" in metrics["test"] and "resnet50" in metrics["test"]
    for name in [*FOUR, "fusion", *(f"fusion_{s}" for s in fusion.STRATEGIES)]:
        pairs = pd.read_csv(tmp_path / f"reports/plots/confusion_{name}.csv")
        assert list(pairs.columns) == ["actual", "predicted"] and len(pairs) == 8 * 27
        assert (tmp_path / f"reports/evaluation/per_class_{name}.csv").is_file()
    assert "study weighted F1" in (tmp_path / "reports/results.md").read_text()


def test_declared_plots_match_the_files_evaluate_writes():
    """dvc.yaml lists plots statically: they must be exactly the names evaluate produces."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {next(iter(p)) for p in stages["evaluate"]["plots"]}
    names = [*default_params()["fusion"]["models"], "fusion", *(f"fusion_{s}" for s in fusion.STRATEGIES)]
    assert declared == {f"reports/plots/confusion_{n}.csv" for n in names}
    for p in stages["evaluate"]["plots"]:
        props = next(iter(p.values()))
        assert props["template"] == "confusion" and {props["x"], props["y"]} == {"actual", "predicted"}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.mark.slow
def test_dvc_metrics_diff_shows_a_param_change(tmp_path):
    """The real fusion/evaluate stage declarations, run by DVC in a scratch repo on constructed tables."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / "stages").mkdir()
    for stage in ("fusion", "evaluate"):
        shutil.copy(REPO / "stages" / f"{stage}.py", repo / "stages")
    real = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump({
        "metrics": real["metrics"],
        "stages": {s: real["stages"][s] for s in ("fusion", "evaluate")}}, sort_keys=False))
    tables, _ = make_tables(FOUR, per_class=8, strength=2.5)
    write_stage_inputs(repo, tables)
    (repo / "params.yaml").write_text(yaml.safe_dump(with_overrides(default_params(), FAST), sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc = [str(Path(sys.executable).parent / "dvc")]

    def run(*args: str) -> str:
        out = subprocess.run([*dvc, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    _git(repo, "init", "-q")
    run("init", "-q")
    run("repro", "-q", "evaluate")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "baseline")
    report = json.loads((repo / "reports/fusion.json").read_text())
    chosen_f1 = next(s["test_weighted_f1"] for s in report["strategies"] if s["chosen"])
    other = next(s["strategy"] for s in report["strategies"] if s["test_weighted_f1"] != chosen_f1)
    (repo / "params.yaml").write_text(yaml.safe_dump(
        with_overrides(default_params(), {**FAST, "fusion.strategy": other}), sort_keys=False))
    run("repro", "-q", "evaluate")
    diff = json.loads(run("metrics", "diff", "--json"))
    change = diff["reports/metrics.json"]["test.fusion.weighted_f1"]
    assert change["old"] == pytest.approx(chosen_f1) and change["new"] != change["old"]

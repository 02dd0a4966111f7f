"""End to end: `rakuten compare` on two real experiments of the tiny project, beside `dvc metrics diff`.

Two `dvc exp run fusion -S fusion.strategy=...` experiments (only the fusion stage reruns: seconds) change
the fusion and leave every model's predictions as they were. Compare reads both runs' prediction tables
from the DVC cache by experiment name, git revision or `workspace`; the paired difference of the models
is exactly 0 and the fusion's is the one `dvc metrics diff` prints, now with its interval. The unit
tests (tests/evaluation/test_compare.py) show the interval is paired and the refusals' wording.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from rakuten.contracts import registry
from tests.helpers.dvc_repo import copy_built_repo, dvc, git, sh

pytestmark = pytest.mark.slow
EXPERIMENTS = {"vote-max": "max_rule", "vote-soft": "soft_vote"}
MODELS = list(registry.MODELS)
#: enough resamples for a stable interval on the tiny test split, few enough to keep the test short
RESAMPLES = "2000"


@pytest.fixture(scope="module")
def repo(tiny_built_repo, tmp_path_factory) -> Path:
    """A copy of the tiny built project holding the two experiments; its workspace holds the last one."""
    root = copy_built_repo(tiny_built_repo, tmp_path_factory.mktemp("compare") / "repo")
    for name, strategy in EXPERIMENTS.items():
        dvc("exp", "run", "fusion", "-S", f"fusion.strategy={strategy}", "--name", name, cwd=root)
    return root


def compare(repo: Path, *args: str, check: bool = True):
    return sh([sys.executable, "-m", "rakuten.serving.cli", "compare", *args], repo, check)


def fusion_f1_diff(repo: Path, a: str, b: str) -> tuple[float, float]:
    """The fusion's test weighted F1 in ``a`` and ``b`` as `dvc metrics diff` reports them."""
    diff = json.loads(dvc("metrics", "diff", a, b, "--json", cwd=repo).stdout)
    entry = diff["reports/metrics/fusion.json"]["test.weighted_f1"]
    return entry["old"], entry["new"]


def test_two_experiments_compared_by_name(repo):
    data = json.loads(compare(repo, "vote-max", "vote-soft", "--resamples", RESAMPLES, "--json").stdout)
    assert set(data["results"]) == {*MODELS, "fusion"} and data["only_in_a"] == data["only_in_b"] == []
    assert data["bootstrap"] == {"resamples": int(RESAMPLES), "level": 0.95, "seed": 0}
    for name in MODELS:  # the experiments reran the fusion only: every model predicts the same rows alike
        got = data["results"][name]
        assert got["weighted_f1_a"] == got["weighted_f1_b"] and got["changed_rows"] == 0 and got["classes"] == []
        assert (got["difference"], got["difference_low"], got["difference_high"]) == (0.0, 0.0, 0.0)
    fusion = data["results"]["fusion"]
    old, new = fusion_f1_diff(repo, "vote-max", "vote-soft")
    assert (fusion["weighted_f1_a"], fusion["weighted_f1_b"]) == pytest.approx((old, new), abs=1e-6)
    assert fusion["difference"] == pytest.approx(new - old, abs=2e-6)
    assert fusion["changed_rows"] > 0 and fusion["difference"] != 0  # the strategies disagree on some rows
    assert fusion["difference_low"] <= fusion["difference"] <= fusion["difference_high"]
    assert fusion["difference_low"] < fusion["difference_high"] and fusion["classes"]


def test_an_experiment_against_head_and_the_workspace_and_refusal(repo):
    text = compare(repo, "HEAD", "vote-soft", "--resamples", RESAMPLES).stdout
    rows = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in MODELS}
    assert set(rows) == set(MODELS) and all("[+0.0000, +0.0000]" in row for row in rows.values())
    fusion = next(line for line in text.splitlines() if line.startswith("fusion "))
    # HEAD's committed metrics, and the workspace's: the last experiment's, applied by `dvc exp run`
    old = json.loads(git("show", "HEAD:reports/metrics/fusion.json", cwd=repo).stdout)["test"]["weighted_f1"]
    new = json.loads((repo / "reports/metrics/fusion.json").read_text())["test"]["weighted_f1"]
    assert f"{old:.4f}" in fusion and f"{new:.4f}" in fusion and f"{new - old:+.4f}" in fusion
    assert fusion.count("[") == 1 and "classes whose F1 moved most (B - A):" in text

    same = json.loads(compare(repo, "vote-soft", "workspace", "--resamples", RESAMPLES, "--json").stdout)
    assert all(r["difference"] == r["changed_rows"] == 0 for r in same["results"].values())

    path = repo / "reports/probs/fusion.parquet"  # a workspace scored on other test rows is refused
    table = pd.read_parquet(path)
    dropped = table[table["split"] == "test"]["row_id"].min()
    table[table["row_id"] != dropped].to_parquet(path)
    refused = compare(repo, "HEAD", "workspace", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "error: HEAD and workspace have different test rows in reports/probs/fusion.parquet: 1 row_id in one run "
        f"only, first row_id {dropped} (only in HEAD); compare runs scored on the same test split"
    )

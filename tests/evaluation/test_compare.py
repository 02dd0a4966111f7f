"""`rakuten compare`: the paired difference of two runs on the same test rows, per model and fusion, the
classes that moved most, the refusal of runs scored on different rows, and the command around it. The
end-to-end run on two real experiments of the tiny project is tests/integration/test_compare.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from rakuten.contracts.classes import CLASS_CODES, codes_to_indices
from rakuten.contracts.model_files import proba_frame
from rakuten.core.config import defaults, iter_knobs
from rakuten.core.errors import PipelineError
from rakuten.evaluation import compare as C
from rakuten.evaluation.bootstrap import BootstrapConfig, distribution, interval, paired_difference, score_statistic
from rakuten.serving import cli

CFG = BootstrapConfig(resamples=2000, level=0.95, seed=0)
CODES = np.asarray(CLASS_CODES)


def table(row_ids, labels, predicted, split: str = "test") -> pd.DataFrame:
    """A contract prediction table whose argmax is ``predicted`` (one-hot probabilities)."""
    n = len(row_ids)
    proba = np.zeros((n, len(CODES)))
    proba[np.arange(n), codes_to_indices(predicted)] = 1.0
    rows = pd.DataFrame({"row_id": row_ids, "split": [split] * n, "prdtypecode": labels})
    return proba_frame(rows, proba)


def correlated(n: int = 400, fixed: int = 12, seed: int = 1):
    """Labels, a predictor A right on about 70% of rows, and B = A with ``fixed`` of A's errors corrected:
    two predictors right and wrong on nearly the same rows, as two runs of one pipeline are."""
    rng = np.random.default_rng(seed)
    y = CODES[rng.integers(0, 6, n)]
    wrong = rng.random(n) < 0.3
    a = np.where(wrong, CODES[(codes_to_indices(y) + 1 + rng.integers(0, 5, n)) % 6], y)
    b = a.copy()
    b[np.flatnonzero(a != y)[:fixed]] = y[np.flatnonzero(a != y)[:fixed]]
    return y, a, b


def run(rev: str, tables: dict) -> C.Run:
    return C.Run(rev, None, tables)


# ------------------------------------------------------------------------------------- the difference


def unpaired_interval(y, a, b, cfg: BootstrapConfig) -> tuple[float, float]:
    """The interval of F1(B) - F1(A) when A and B are resampled independently (the wrong computation)."""
    dist_a = distribution(score_statistic(y, a), len(y), cfg)["weighted_f1"]
    dist_b = distribution(score_statistic(y, b), len(y), BootstrapConfig(cfg.resamples, cfg.level, cfg.seed + 1))
    return interval(dist_b["weighted_f1"] - dist_a, cfg.level)


def test_the_difference_is_paired_and_so_narrower_than_two_independent_resamplings():
    y, a, b = correlated()
    result = C.compare_predictions("fusion", y, a, b, CFG)
    d = result.difference
    low, high = unpaired_interval(y, a, b, CFG)
    assert d == paired_difference(y, b, a, CFG)  # B - A on the same resampled rows
    assert low < 0 < high  # independently resampled, B's gain is lost in the noise of the two scores
    assert 0 < d.low <= d.value <= d.high  # paired, it is clearly positive: B only fixes A's errors
    assert d.high - d.low < 0.5 * (high - low)
    assert d.share_a_wins > 0.99  # the share of resamples where B beats A


def test_b_minus_a_sign_and_scores():
    y, a, b = correlated()
    forward = C.compare_predictions("m", y, a, b, CFG)
    back = C.compare_predictions("m", y, b, a, CFG)
    f1 = {k: f1_score(y, p, average="weighted") for k, p in (("a", a), ("b", b))}
    assert forward.weighted_f1_a == pytest.approx(f1["a"]) and forward.weighted_f1_b == pytest.approx(f1["b"])
    assert forward.difference.value == pytest.approx(f1["b"] - f1["a"]) and forward.difference.value > 0
    assert back.difference.value == pytest.approx(-forward.difference.value)
    assert (back.difference.low, back.difference.high) == pytest.approx(
        (-forward.difference.high, -forward.difference.low)
    )
    assert forward.changed_rows == back.changed_rows == 12


def test_identical_predictions_differ_by_exactly_zero():
    y, a, _ = correlated()
    same = C.compare_predictions("tfidf_svm", y, a, a.copy(), CFG)
    d = same.difference
    assert (d.value, d.low, d.high, d.share_a_wins) == (0.0, 0.0, 0.0, 0.0)
    assert same.changed_rows == 0 and same.classes == ()


# ------------------------------------------------------------------------------------- the classes


def test_class_f1_is_sklearns_per_class_f1():
    y, a, _ = correlated(n=120)
    a[:5] = 2905  # predicted, never actual
    expected = f1_score(y, a, labels=list(CLASS_CODES), average=None, zero_division=0)
    np.testing.assert_allclose(C.class_f1(y, a), expected)


def test_the_classes_that_moved_most_by_absolute_change_then_code():
    y, a, b = correlated(n=300, fixed=40, seed=3)
    b[y == CODES[5]] = CODES[0]  # class 5 loses every row: a large fall
    f1_a = f1_score(y, a, labels=list(CLASS_CODES), average=None, zero_division=0)
    f1_b = f1_score(y, b, labels=list(CLASS_CODES), average=None, zero_division=0)
    change = f1_b - f1_a
    moved = [i for i in range(len(CODES)) if abs(change[i]) > 1e-12]
    expected = sorted(moved, key=lambda i: (-round(abs(change[i]), 9), CODES[i]))[:3]
    shifts = C.class_shifts(y, a, b, top=3)
    assert [s.code for s in shifts] == [CODES[i] for i in expected]
    assert shifts[0].code == CODES[5] and shifts[0].change < 0 and shifts[0].f1_b == 0.0
    for s in shifts:
        i = CLASS_CODES.index(s.code)
        assert (s.f1_a, s.f1_b, s.change) == pytest.approx((f1_a[i], f1_b[i], change[i]))
        assert s.support == int((y == s.code).sum())
    assert len(C.class_shifts(y, a, b, top=100)) == len(moved)  # unchanged classes are never listed


def test_equal_changes_are_listed_by_class_code():
    y = np.array([40, 40, 10, 10, 50, 50])
    a = np.array([10, 40, 40, 10, 50, 50])  # 10 and 40 each half right
    b = y.copy()  # both fixed: the same change, 10 listed first
    shifts = C.class_shifts(y, a, b, top=5)
    assert [s.code for s in shifts] == [10, 40] and shifts[0].change == shifts[1].change == 0.5


# ------------------------------------------------------------------------------------- the runs


def two_runs(models_differ: bool = False):
    y, a, b = correlated()
    ids = np.arange(1000, 1000 + len(y))
    val = table([1, 2, 3], [10, 10, 40], [10, 40, 40], split="val")
    tab = {"a": table(ids, y, a), "b": table(ids, y, b)}
    run_a = run("a", {"tfidf_svm": tab["a"], "fusion": tab["a"]})
    other = tab["b"] if models_differ else tab["a"]
    run_b = run("b", {"tfidf_svm": pd.concat([val, other]), "fusion": tab["b"], "joint": tab["b"]})
    return y, a, b, ids, run_a, run_b


def test_compare_runs_pairs_each_name_by_row_id_on_test_rows_only():
    y, a, b, ids, run_a, run_b = two_runs()
    shuffled = run_b.tables["fusion"].sample(frac=1.0, random_state=0)  # row order is not row identity
    run_b = run("b", {**run_b.tables, "fusion": shuffled})
    result = C.compare_runs(run_a, run_b, CFG)
    assert [r.name for r in result.results] == ["tfidf_svm", "fusion"]
    assert result.only_a == () and result.only_b == ("joint",)
    models, fusion = result.results
    assert models.difference.value == models.difference.low == models.difference.high == 0.0
    assert fusion.difference == paired_difference(y, b, a, CFG) and fusion.rows == len(y)


def test_runs_with_different_test_rows_are_refused_in_one_line():
    _, _, _, ids, run_a, run_b = two_runs()
    moved = run_b.tables["fusion"].copy()
    moved.loc[moved["row_id"].isin([1003, 1010]), "row_id"] += 5000
    with pytest.raises(PipelineError) as err:
        C.compare_runs(run_a, run("b", {"fusion": moved}), CFG)
    message = str(err.value)
    assert "\n" not in message
    assert "4 row_ids in one run only, first row_id 1003 (only in a)" in message
    assert "reports/probs/fusion.parquet" in message


def test_runs_with_different_labels_are_refused_in_one_line():
    _, _, _, ids, run_a, run_b = two_runs()
    relabelled = run_b.tables["fusion"].copy()
    at = relabelled["row_id"].isin([1007, 1020, 1030])
    first = int(relabelled.loc[relabelled["row_id"] == 1007, "prdtypecode"].iloc[0])
    new = 2905 if first != 2905 else 10
    relabelled.loc[at, "prdtypecode"] = new
    with pytest.raises(PipelineError) as err:
        C.compare_runs(run_a, run("b", {"fusion": relabelled}), CFG)
    message = str(err.value)
    assert "\n" not in message
    assert f"3 rows differ, first row_id 1007 (prdtypecode {first} in a, {new} in b)" in message


def test_runs_with_nothing_in_common_are_refused():
    _, _, _, _, run_a, run_b = two_runs()
    with pytest.raises(PipelineError, match="no prediction table in common"):
        C.compare_runs(run("a", {"tfidf_svm": run_a.tables["tfidf_svm"]}), run("b", {}), CFG)


def test_render_and_json_show_each_name_with_its_interval():
    _, _, _, _, run_a, run_b = two_runs(models_differ=True)
    result = C.compare_runs(run_a, run_b, CFG, top=2)
    text = C.render(result)
    fusion = result.results[1]
    d = fusion.difference
    row = next(line for line in text.splitlines() if line.startswith("fusion "))
    assert f"{d.value:+.4f}" in row and f"[{d.low:+.4f}, {d.high:+.4f}]" in row
    assert "only in B, not compared: joint" in text
    data = json.loads(C.to_json(result))
    assert data["bootstrap"] == {"resamples": 2000, "level": 0.95, "seed": 0}
    got = data["results"]["fusion"]
    assert (got["difference"], got["difference_low"], got["difference_high"]) == (
        round(d.value, 6),
        round(d.low, 6),
        round(d.high, 6),
    )
    assert [c["prdtypecode"] for c in got["classes"]] == [c.code for c in fusion.classes] and len(got["classes"]) == 2


# ------------------------------------------------------------------------------------- the command


def test_defaults_come_from_the_evaluate_section_else_the_declaration():
    assert C.configured(None, "params.yaml") == BootstrapConfig()
    assert C.configured({"evaluate": {"resamples": 500, "seed": 3, "other": 1}}, "p") == BootstrapConfig(500, 0.95, 3)
    with pytest.raises(PipelineError, match=r"^p: evaluate\.level = 1\.5"):
        C.configured({"evaluate": {"level": 1.5}}, "p")


def test_the_bootstrap_options_are_the_declared_knobs():
    commands = next(a for a in cli.build_parser()._actions if a.dest == "command")
    actions = {a.dest: a for a in commands.choices["compare"]._actions}
    declared = defaults(BootstrapConfig)
    for name, _, knob in iter_knobs(BootstrapConfig):
        assert actions[name].help == f"{knob.help} (default: {declared[name]})"


@pytest.fixture
def fake_runs(monkeypatch):
    """`rakuten compare` on two synthetic runs instead of a DVC project's revisions."""
    _, _, _, _, run_a, run_b = two_runs()
    runs = {"a": run_a, "b": run_b}
    monkeypatch.setattr(C, "load_run", lambda repo, rev: runs[rev])
    return runs


def test_the_command_prints_json_with_params_defaults_and_options(fake_runs, tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("evaluate:\n  resamples: 300\n  seed: 3\n")
    assert cli.main(["compare", "a", "b", "--repo", str(tmp_path), "--seed", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bootstrap"] == {"resamples": 300, "level": 0.95, "seed": 4}
    assert set(data["results"]) == {"tfidf_svm", "fusion"}


def test_the_command_refuses_in_one_line_without_traceback(fake_runs, tmp_path, capsys):
    fake_runs["b"] = run("b", {"fusion": fake_runs["b"].tables["fusion"].iloc[:-1]})
    assert cli.main(["compare", "a", "b", "--repo", str(tmp_path), "--resamples", "200"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: a and b have different test rows")
    assert cli.main(["compare", "a", "b", "--repo", str(tmp_path), "--resamples", "5"]) == 2
    assert capsys.readouterr().err.startswith("error: --resamples = 5")

"""End to end: the whole DVC graph on a tiny catalog, in a temporary copy of the repository.

Checks the promises of the README: `dvc repro` builds everything, a second `dvc repro` does
nothing, `--force` reruns give identical metrics, editing a module makes exactly the stages that
execute it stale, and the raw data dep follows `data.raw_dir`. (`dvc exp run -S` and
`dvc metrics diff`, remotes and experiment sharing: tests/integration/test_team.py.)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.dvc_repo import copy_built_repo, dvc, predict_cli, sh
from tests.helpers.stagerun import with_overrides
from tools.import_closure import Project, stage_script, stages

pytestmark = pytest.mark.slow


def stage_names(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def metrics_files(repo: Path) -> dict[str, str]:
    found = sorted((repo / "reports").rglob("*.json"))
    return {p.relative_to(repo).as_posix(): p.read_text() for p in found if "bench" not in p.parts}


@pytest.fixture(scope="module")
def repo(tiny_built_repo, tmp_path_factory) -> Path:
    """This module's own copy of the tiny built repository (its tests run experiments and edits)."""
    return copy_built_repo(tiny_built_repo, tmp_path_factory.mktemp("e2e") / "repo")


def test_repro_builds_every_declared_output(repo):
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name, stage in spec.items():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            assert (repo / path).exists(), f"stage {name} did not produce {path}"


def test_second_repro_does_nothing(repo):
    result = dvc("repro", cwd=repo)
    assert "Running stage" not in result.stdout
    assert "Data and pipelines are up to date" in result.stdout
    status = dvc("status", "--json", cwd=repo)
    assert json.loads(status.stdout) == {}


def _set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(with_overrides(yaml.safe_load(path.read_text()), overrides), sort_keys=False))


def test_embed_and_joint_write_their_outputs(repo):
    report = json.loads((repo / "reports/embed.json").read_text())
    catalog_rows = json.loads((repo / "reports/ingest.json").read_text())["rows_out"]
    assert report["rows"] == catalog_rows and set(report["rows_per_split"]) == {"train", "val", "test", "official_test"}
    assert report["encoders"] == {"text": "camembert", "image": "resnet50"}
    assert set(json.loads((repo / "reports/metrics/joint.json").read_text())) >= {"val", "test"}
    trained_on = json.loads((repo / "models/joint/preprocessing.json").read_text())
    assert set(trained_on) == {"text_clean", "image_clean"}  # what `rakuten predict` cleans new rows with
    assert "joint" in json.loads((repo / "reports/fusion.json").read_text())["models"]


def test_a_head_param_reruns_joint_and_never_the_embeddings(repo):
    """The frozen-embedding cache: a sweep of the head (`-S joint.hidden=...`) leaves `embed` up to date."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    hidden, batch = params["joint"]["hidden"], params["embed"]["eval_batch_size"]
    image_model = params["embed"]["image_model"]
    try:
        _set_params(repo, {"joint.hidden": hidden + 16})
        assert set(dvc_status(repo)) == {"joint"}  # not embed: it does not read the joint section
        result = dvc("repro", "joint", cwd=repo)
        assert "Running stage 'joint'" in result.stdout and "Running stage 'embed'" not in result.stdout
        _set_params(repo, {"embed.eval_batch_size": batch // 2})
        assert "embed" not in dvc_status(repo)  # a runtime knob: the same embeddings whatever the batch
        _set_params(repo, {"embed.image_model": image_model + "_other"})
        assert "embed" in dvc_status(repo)  # a tracked embed param recomputes the embeddings (then joint follows)
    finally:
        _set_params(repo, {"joint.hidden": hidden, "embed.eval_batch_size": batch, "embed.image_model": image_model})
    result = dvc("repro", cwd=repo)  # the head retrains to the same bytes, so nothing downstream reruns
    assert "Running stage 'joint'" in result.stdout and "Running stage 'fusion'" not in result.stdout
    assert dvc_status(repo) == {}


def test_predict_in_chunks_on_two_workers_writes_the_same_bytes(repo, tmp_path):
    """--chunk-rows and --workers are runtime knobs: rows scored 3 at a time by two worker processes (each
    loading the models itself) give the CSV of the one-process, one-chunk run, byte for byte."""
    predict_cli(repo, tmp_path / "one.csv", "--chunk-rows", "100000")
    predict_cli(repo, tmp_path / "two.csv", "--chunk-rows", "3", "--workers", "2")
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    explain = ("--workers", "2", "--explain", str(tmp_path / "x.jsonl"))
    refused = predict_cli(repo, tmp_path / "x.csv", *explain, check=False)
    assert refused.returncode == 2 and "--explain runs in one process" in refused.stderr


def test_predict_cli_reproduces_the_submission(repo, tmp_path):
    """`rakuten predict` on the X_test rows gives exactly reports/submission.csv: same codes, and its
    top-3 probabilities are the fused probabilities of reports/probs/fusion.parquet (to 1e-6, the
    CSV's 6 decimals). Then, on the first rows, with text_clean.normalise.lemmatizer changed after
    training: one warning naming the knob, and still the trained cleaning (the same output, where
    cleaning with `none` changes the TF-IDF and fastText inputs and so the fused probabilities); and
    --explain writes one JSON line per row, with the three explaining models' evidence."""

    import numpy as np
    import pandas as pd

    result = predict_cli(repo, tmp_path / "predictions.csv")
    assert " WARNING " not in result.stderr, result.stderr[-2000:]
    pred = pd.read_csv(tmp_path / "predictions.csv", index_col=0)
    x_test = pd.read_csv(repo / "data/sample/X_test_update.csv", index_col=0)
    assert list(pred.index) == list(x_test.index)  # one row per input row, in input order
    submission = pd.read_csv(repo / "reports/submission.csv", index_col=0)
    assert sorted(pred.index) == list(submission.index)
    assert pred.loc[submission.index, "prdtypecode"].tolist() == submission["prdtypecode"].tolist()
    catalog = pd.read_parquet(repo / "data/interim/catalog.parquet")
    fused = pd.read_parquet(repo / "reports/probs/fusion.parquet")
    fused = (
        fused[fused["split"] == "official_test"]
        .merge(catalog[["row_id", "orig_index"]], on="row_id")
        .set_index("orig_index")
        .loc[pred.index]
    )
    for k in (1, 2, 3):
        expected = [fused.at[i, f"p_{code}"] for i, code in zip(pred.index, pred[f"top{k}_code"])]
        np.testing.assert_allclose(pred[f"top{k}_proba"].to_numpy(), expected, rtol=0, atol=1e-6)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["text_clean"]["normalise"]["lemmatizer"] == "lookup"
    params["text_clean"]["normalise"]["lemmatizer"] = "none"
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    first = x_test.head(4)
    first.to_csv(tmp_path / "first.csv")
    result = sh(
        [
            sys.executable,
            "-m",
            "rakuten.serving.cli",
            "predict",
            "--input",
            str(tmp_path / "first.csv"),
            "--images",
            "data/sample/images/image_test",
            "--output",
            str(tmp_path / "changed.csv"),
            "--params",
            str(tmp_path / "changed.yaml"),
            "--explain",
            str(tmp_path / "why.jsonl"),
        ],
        repo,
    )
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "text_clean.normalise.lemmatizer: trained 'lookup'" in warnings[0], warnings
    assert "now 'none'" in warnings[0] and "predicting with the trained values" in warnings[0]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "changed.csv", index_col=0), pred.loc[first.index])
    lines = [json.loads(line) for line in (tmp_path / "why.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(first.index)
    assert [line["prdtypecode"] for line in lines] == pred.loc[first.index, "prdtypecode"].tolist()
    both = [line for line in lines if pred.at[line["index"], "inputs_used"] == "text+image"]
    assert both
    for line in both:
        kinds = {name: e["kind"] for name, e in line["explanations"].items()}
        assert kinds == {"tfidf_svm": "terms", "camembert": "tokens", "resnet50": "gradcam"}, kinds
        assert line["explanations"]["resnet50"]["image"].startswith("data:image/png;base64,")


def test_forced_rerun_gives_identical_metrics(repo):
    """The classic models and everything after them rerun: the same metrics, and DVC finds the same
    outputs. (Byte-identical reruns of the rest by their own tests: the deep models' training in
    tests/integration/test_determinism.py, the joint head in test_a_head_param_reruns_joint_and_never_the_embeddings,
    the data stages' e.g. the sample generator's.)"""
    before = metrics_files(repo)
    assert before
    result = dvc("repro", "--force", "--downstream", "tfidf_svm", "fasttext", cwd=repo)
    assert all(f"Running stage '{name}'" in result.stdout for name in ("tfidf_svm", "fasttext", "fusion", "submission"))
    assert metrics_files(repo) == before
    assert dvc_status(repo) == {}


def test_row_accounting_stage_by_stage(repo):
    """Rows in = rows out + rows reported, for every stage's table (nothing disappears)."""
    import pandas as pd

    def table(rel: str) -> pd.DataFrame:
        return pd.read_parquet(repo / rel)

    ingest = json.loads((repo / "reports/ingest.json").read_text())
    catalog = table("data/interim/catalog.parquet")
    assert ingest["rows_train"] + ingest["rows_official_test"] == ingest["rows_out"] == len(catalog)
    split = table("data/interim/split.parquet")
    split_report = json.loads((repo / "reports/split.json").read_text())
    assert sum(split_report["rows"].values()) == len(split) == len(catalog)
    for rel in (
        "data/interim/image_hashes.parquet",
        "data/processed/text.parquet",
        "data/processed/image_quality.parquet",
    ):
        assert sorted(table(rel)["row_id"]) == sorted(catalog["row_id"]), rel
    predicted = split[split["split"].isin(["val", "test", "official_test"])]
    for name in ("tfidf_svm", "fasttext", "camembert", "resnet50", "joint", "fusion"):
        probs = table(f"reports/probs/{name}.parquet")
        assert sorted(probs["row_id"]) == sorted(predicted["row_id"]), name
    training = json.loads((repo / "reports/training/resnet50.json").read_text())
    rows = training.get("rows", training)
    assert rows["train_rows"] == rows["train_rows_used"] + sum(
        v for k, v in rows.items() if k.startswith("dropped_")
    ), rows
    submission = pd.read_csv(repo / "reports/submission.csv", index_col=0)
    assert len(submission) == split_report["rows"]["official_test"]


def dvc_status(repo: Path) -> dict:
    return json.loads(dvc("status", "--json", cwd=repo).stdout)


@pytest.mark.parametrize(
    "module, expected",
    [
        ("src/rakuten/core/io.py", "every stage"),
        ("src/rakuten/contracts/classes.py", "its importers"),  # the class order of every probability table
        # not resnet50: the models share no module; embed runs the trained camembert as the joint model's text encoder
        ("src/rakuten/models/camembert/training.py", {"camembert", "embed"}),
    ],
)
def test_editing_a_module_reruns_exactly_the_stages_that_execute_it(repo, module, expected):
    """`dvc status` after a one-comment edit lists exactly the stages whose import closure holds the
    module (tools/import_closure.py), so no stage goes stale and none reruns for nothing."""
    project = Project(repo)
    spec = stages(repo)
    executes = {name for name, stage in spec.items() if module in project.stage_files(stage_script(name, stage))}
    if expected == "every stage":
        assert executes == set(spec)
    elif expected == "its importers":
        assert {"tfidf_svm", "fasttext", "camembert", "resnet50", "fusion", "evaluate", "submission"} <= executes
    else:
        assert executes == expected
    path = repo / module
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit that changes no behaviour\n")
        changed = dvc_status(repo)
    finally:
        path.write_bytes(original)
    stale = {
        name
        for name, entries in changed.items()
        for entry in entries
        if isinstance(entry, dict)
        for dep in entry.get("changed deps", {})
        if module == dep or module.startswith(dep + "/")
    }
    assert set(changed) == stale == executes, f"dvc status: {changed}; the code says {sorted(executes)}"
    assert dvc_status(repo) == {}  # restored: the other tests see an up-to-date pipeline


def test_data_raw_dir_is_the_folder_dvc_tracks(repo):
    """The raw data deps are `${data.raw_dir}`: pointing the param elsewhere moves what DVC hashes."""
    spec = stages(repo)
    readers = {name for name, stage in spec.items() if "${data.raw_dir}" in stage.get("deps", [])}
    assert readers == {"ingest", "image_hash", "image_clean"}
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["data"]["raw_dir"] = "data/elsewhere"
    elsewhere = repo / "data" / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "X_train_update.csv").write_text(",designation,description,productid,imageid\n")
    try:
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        changed = dvc_status(repo)
    finally:
        params_file.write_text(original)
        shutil.rmtree(elsewhere)
    tracking = {
        name
        for name, entries in changed.items()
        for entry in entries
        if isinstance(entry, dict) and "data/elsewhere" in entry.get("changed deps", {})
    }
    assert tracking == readers, changed
    assert "data/raw" not in json.dumps(changed)
    assert dvc_status(repo) == {}

"""Artifacts are checked against the hashes DVC recorded in dvc.lock before anything loads them.

On a copy of the tiny built project's models (with its dvc.lock and the folders' listings from the DVC
cache): each artifact type tampered or corrupted as an attacker or a bad disk would (a pickle whose payload
writes a marker file, half a joblib, a damaged fastText header, 64 zeroed bytes in the ResNet weights, a
changed tokenizer, an extra file) is refused by `Predictor.load`, `rakuten predict`, `rakuten serve`, the
embed encoders' loader and the `predict` stage, in one line naming the file with the expected and the
found hash, and the payload never runs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords, IntegrityError, artifact_md5, parse_lock
from rakuten.serving import cli
from tests.helpers.stagerun import REPO

pytestmark = pytest.mark.slow


class Payload:
    """A pickle that, when loaded, writes ``marker``: what an attacker would put on the remote."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


@pytest.fixture(scope="module")
def project(tiny_built_repo, tmp_path_factory) -> Path:
    """models/, dvc.lock and the DVC cache's folder listings of the tiny project (a pristine copy)."""
    root = tmp_path_factory.mktemp("integrity") / "project"
    shutil.copytree(tiny_built_repo / "models", root / "models")
    shutil.copy2(tiny_built_repo / "dvc.lock", root / "dvc.lock")
    for listing in (tiny_built_repo / ".dvc/cache").rglob("*.dir"):
        target = root / listing.relative_to(tiny_built_repo)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(listing, target)
    return root


@pytest.fixture
def work(project, tmp_path) -> Path:
    """A fresh copy of ``project`` to tamper with."""
    return Path(shutil.copytree(project, tmp_path / "p", symlinks=True))


def test_folder_hashes_equal_the_ones_dvc_recorded(tiny_built_repo):
    lock = yaml.safe_load((tiny_built_repo / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
    models = sorted(p for p in outs if p.startswith("models/"))
    assert len(models) >= 6
    for rel in models + ["reports/submission.csv"]:
        assert artifact_md5(tiny_built_repo / rel) == outs[rel], rel


def _load(root: Path):
    from rakuten.core.params import load_params
    from rakuten.serving.predict import Predictor

    return Predictor.load(
        root / "models", load_params(REPO / "params.yaml"), records=ArtifactRecords.from_lock(root / "dvc.lock")
    )


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _assert_refused(exc: BaseException, path: Path, expected: str, lock: Path) -> None:
    message = str(exc)
    assert "\n" not in message
    assert message.startswith(f"{path}: md5 {_md5(path)}, expected {expected} ({lock})"), message


TAMPERS = {
    # artifact file -> how it is changed
    "fusion/fusion.joblib": "pickle",
    "tfidf_svm/model.joblib": "pickle",
    "tfidf_svm/model.joblib#half": "half",
    "fasttext/model.bin": "header",
    "resnet50/weights.pt": "zeros",
    "joint/weights.pt": "zeros",
    "camembert/hf/model.safetensors": "zeros",
    "tfidf_svm/preprocessing.json": "half",  # not code, but it decides the cleaning, so it is checked too
}


@pytest.mark.parametrize("target", list(TAMPERS))
def test_a_tampered_or_corrupted_artifact_is_refused_before_it_is_loaded(work, tmp_path, target):
    rel = target.split("#")[0]
    path, folder = work / "models" / rel, work / "models" / rel.split("/")[0]
    records = ArtifactRecords.from_lock(work / "dvc.lock")
    listing = records._cached_listing(records.recorded(folder)[1]["md5"])
    expected = {e["relpath"]: e["md5"] for e in listing}[path.relative_to(folder).as_posix()]
    marker = tmp_path / "pwned"
    data = path.read_bytes()
    how = TAMPERS[target]
    if how == "pickle":
        path.write_bytes(evil_pickle(marker))
    elif how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "header":
        path.write_bytes(b"\x00" * 8 + data[8:])
    else:  # 64 zeroed bytes in the middle of the weights: loads fine, predicts wrong
        mid = len(data) // 2
        path.write_bytes(data[:mid] + b"\x00" * 64 + data[mid + 64 :])
    with pytest.raises(IntegrityError) as exc:
        _load(work)
    _assert_refused(exc.value, path, expected, work / "dvc.lock")
    assert not marker.exists()


def test_a_changed_tokenizer_or_an_added_file_is_named(work):
    tokenizer = sorted((work / "models/camembert").rglob("tokenizer*.json"))[0]
    original = tokenizer.read_bytes()
    tokenizer.write_bytes(original.replace(b'"', b"'", 1))
    with pytest.raises(IntegrityError, match=f"^{tokenizer}: md5 "):
        _load(work)
    tokenizer.write_bytes(original)
    extra = work / "models/camembert/extra.txt"
    extra.write_text("not written by the pipeline\n")
    with pytest.raises(IntegrityError, match=f"^{extra}: md5 {_md5(extra)}, expected no such file"):
        _load(work)


def test_without_the_cached_listing_the_folder_is_named(work):
    shutil.rmtree(work / ".dvc")
    path = work / "models/fusion"
    expected = ArtifactRecords.from_lock(work / "dvc.lock").recorded(path)[1]["md5"]
    (path / "fusion.joblib").write_bytes(evil_pickle(work / "pwned"))
    with pytest.raises(IntegrityError) as exc:
        _load(work)
    assert str(exc.value).startswith(f"{path}: md5 {artifact_md5(path)}, expected {expected}")
    assert not (work / "pwned").exists()


def test_an_artifact_dvc_did_not_record_is_refused(work):
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        stage["outs"] = [o for o in stage.get("outs", []) if o["path"] != "models/fasttext"]
    (work / "dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(IntegrityError, match="models/fasttext: no hash recorded for it in "):
        _load(work)
    (work / "dvc.lock").unlink()
    with pytest.raises(PipelineError, match="dvc.lock not found"):
        ArtifactRecords.from_lock(work / "dvc.lock")


def test_the_lock_of_the_project_holding_the_models_is_found(work, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert ArtifactRecords.for_path(work / "models" / "fusion").lock == work / "dvc.lock"
    (tmp_path / "m").mkdir()
    with pytest.raises(IntegrityError, match="no dvc.lock in its folder or above"):
        ArtifactRecords.for_path(tmp_path / "m")


def _predict_args(work: Path, out: Path, *extra: str) -> list[str]:
    x = work / "x.csv"
    x.write_text(",designation,description,productid,imageid\n0,Jeu de société,,1,2\n")
    (work / "images").mkdir(exist_ok=True)
    return [
        "predict",
        "--input",
        str(x),
        "--images",
        str(work / "images"),
        "--output",
        str(out),
        "--models",
        str(work / "models"),
        *extra,
    ]


def test_rakuten_predict_and_serve_refuse_a_tampered_pickle_in_one_line(work, capsys):
    marker = work / "pwned"
    target = work / "models/fusion/fusion.joblib"
    target.write_bytes(evil_pickle(marker))
    assert cli.main(_predict_args(work, work / "out.csv", "--params", str(REPO / "params.yaml"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {target}: md5 "), err
    assert "expected " in err[0] and not marker.exists() and not (work / "out.csv").exists()
    assert (
        cli.main(["serve", "--models", str(work / "models"), "--params", str(REPO / "params.yaml"), "--port", "8765"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {target}: md5 "), err
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "schema: '2.0'\nstages:\n<<<<<<< HEAD\n  a: {}\n=======\n  b: {}\n>>>>>>> other\n",
            "dvc.lock: line 3: git conflict marker '<<<<<<<'; resolve the merge",
        ),
        ("stages: [unclosed\n", "dvc.lock: line 2: not valid YAML"),
        ("just: a mapping\n", "dvc.lock: not a dvc.lock (expected a mapping with `schema` and `stages`"),
        ("schema: '2.0'\nstages:\n  x:\n    outs: [{md5: 1}]\n", "dvc.lock: stage 'x': an out without a `path`"),
    ],
)
def test_a_broken_lock_is_one_line(text, expected):
    with pytest.raises(PipelineError) as exc:
        parse_lock(text, "dvc.lock")
    assert str(exc.value).startswith(expected) and "\n" not in str(exc.value)


def test_serve_with_a_conflicted_lock_fails_before_loading_any_model(work):
    """One line and exit 2 within seconds (the lock is read before the models are)."""
    (work / "dvc.lock").write_text("<<<<<<< HEAD\nschema: '2.0'\n=======\n>>>>>>> theirs\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rakuten.serving.cli",
            "serve",
            "--models",
            str(work / "models"),
            "--params",
            str(REPO / "params.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {work / 'dvc.lock'}: line 1: git conflict marker '<<<<<<<'; resolve the merge (for example "
        "`git checkout --theirs dvc.lock`, then `dvc repro`)"
    ], result.stderr
    assert "loading" not in result.stderr


def test_the_encoders_loader_and_the_predict_stage_verify_too(work, tmp_path):
    from rakuten.models import embed

    weights = work / "models/resnet50/weights.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[:100] + b"\x00" * 64 + data[164:])
    cfg = embed.EmbedConfig(text_model="camembert", image_model="resnet50")
    with pytest.raises(IntegrityError, match=f"^{weights}: md5 "):
        embed.load_encoders(cfg, work / "models")
    marker = tmp_path / "pwned"
    (work / "models/fusion/fusion.joblib").write_bytes(evil_pickle(marker))
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/submission.py")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "models/fusion/fusion.joblib: md5 " in lines[0], result.stderr
    assert not marker.exists() and "Traceback" not in result.stderr

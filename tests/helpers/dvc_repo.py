"""A tiny built copy of the repository for the end-to-end DVC tests, and the commands to drive it.

`build_tiny_repo` copies what a fresh clone holds, shrinks every stage with `TINY_PARAMS`, runs
`dvc repro` once and commits the result (params, dvc.lock, the git-tracked metrics). The session
fixture in `tests/conftest.py` builds it once; each test module works on its own copy
(`copy_built_repo`), so no module sees another's experiments or edits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.stagerun import REPO, default_params, with_overrides
from tests.helpers.tiny_profile import TINY_PARAMS

ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "GIT_AUTHOR_NAME": "ci",
    "GIT_AUTHOR_EMAIL": "ci@example.com",
    "GIT_COMMITTER_NAME": "ci",
    "GIT_COMMITTER_EMAIL": "ci@example.com",
}


def sh(
    args: list[str], cwd: Path, check: bool = True, timeout: int = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with the copy's own src/ and this interpreter's bin/ first (stages run
    `python`, as a user's shell would); ``env`` adds variables (credentials, for one)."""
    full = {
        **ENV,
        **(env or {}),
        "PYTHONPATH": str(cwd / "src"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}",
    }
    result = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def dvc(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    return sh([sys.executable, "-m", "dvc", *args], cwd, check, timeout, env)


def predict_cli(repo: Path, out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """`rakuten predict` (the copy's own code) on the sample's official X_test rows, run from the copy."""
    return sh(
        [
            sys.executable,
            "-m",
            "rakuten.serving.cli",
            "predict",
            "--input",
            "data/sample/X_test_update.csv",
            "--images",
            "data/sample/images/image_test",
            "--output",
            str(out),
            *extra,
        ],
        repo,
        check,
    )


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["git", *args], cwd, check)


def copy_repo(dst: Path) -> Path:
    """Tracked and untracked-but-not-ignored files only: what a fresh clone plus the work tree holds."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for rel in filter(None, listing.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def build_tiny_repo(dst: Path) -> Path:
    """A git repository at ``dst`` holding the project on the tiny profile, built by `dvc repro` and
    committed on branch `main`: the state a teammate's clone starts from."""
    root = copy_repo(dst)
    params = with_overrides(default_params(), TINY_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.lock").unlink(missing_ok=True)
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "tiny", cwd=root)
    dvc("repro", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "tiny: built", cwd=root)
    return root


def copy_built_repo(template: Path, dst: Path) -> Path:
    """An independent copy of the built repository (git history, DVC cache, outputs). DVC's own
    temporary folder stays behind: it holds locks and state of the template's path."""
    shutil.copytree(template, dst, symlinks=True, ignore=lambda d, names: ["tmp"] if d.endswith(".dvc") else [])
    return dst

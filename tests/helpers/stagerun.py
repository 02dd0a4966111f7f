"""Run a stage script as DVC would, in a scratch working directory with its own params.yaml."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def default_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _parent(tree: dict, key: str, create: bool = False) -> tuple[dict, str]:
    """The mapping holding dotted ``key`` in ``tree``, and the key's last part (the one walker of the tests)."""
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {}) if create else tree[part]
    return tree, last


def with_overrides(params: dict, overrides: dict) -> dict:
    """Copy of ``params`` with dotted-key overrides applied (``{"split.val": 0.2}``)."""
    out = copy.deepcopy(params)
    for key, value in overrides.items():
        node, last = _parent(out, key, create=True)
        node[last] = value
    return out


def dotted_value(params: dict, key: str):
    """The value at dotted ``key`` (``"fusion.xgboost.max_depth"``)."""
    node, last = _parent(params, key)
    return node[last]


def without(params: dict, key: str) -> dict:
    """Copy of ``params`` with dotted ``key`` removed."""
    out = copy.deepcopy(params)
    node, last = _parent(out, key)
    del node[last]
    return out


def run_stage_script(
    stage: str, workdir: Path, overrides: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Write params.yaml (defaults + overrides) into ``workdir`` and run ``stages/<stage>.py`` there."""
    workdir.mkdir(parents=True, exist_ok=True)
    params = with_overrides(default_params(), overrides or {})
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The ``error:`` lines a failed stage wrote to stderr (there must be exactly one)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def record_outputs(root: Path, *paths: str | Path) -> Path:
    """Record ``paths`` (relative to ``root``) in ``root/dvc.lock`` with their current hashes, as `dvc commit`
    would: artifacts made by a test outside DVC are then loadable (every load checks them against the lock,
    :mod:`rakuten.core.integrity`). Existing records are kept."""
    from rakuten.core.integrity import artifact_md5

    lock_path = Path(root) / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else {"schema": "2.0", "stages": {}}
    outs = lock["stages"].setdefault("test_artifacts", {"cmd": "test", "outs": []})["outs"]
    for path in paths:
        rel = (Path(root) / path).resolve().relative_to(Path(root).resolve()).as_posix()
        outs[:] = [o for o in outs if o["path"] != rel]
        outs.append({"path": rel, "hash": "md5", "md5": artifact_md5(Path(root) / rel)})
    lock_path.write_text(yaml.safe_dump(lock, sort_keys=False))
    return lock_path

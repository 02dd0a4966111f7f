"""One declaration per knob: params.yaml and dvc.yaml's ``params:`` are generated from the declarations,
shared knobs are declared once, and runtime knobs never rerun a stage."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import yaml

from rakuten.core.config import _union_args, iter_knobs, untracked_keys
from rakuten.serving.sections import SECTIONS, declaration
from tests.helpers.dvc_repo import copy_built_repo, dvc
from tests.helpers.stagerun import dotted_value, with_overrides
from tools import params_yaml

REPO = Path(__file__).resolve().parents[2]
#: the knob groups of rakuten.runtime.knobs, each declared once
SHARED = ("device", "precision", "num_threads", "compile", "launcher", "processes", "eval_batch_size")
#: a second declaration of the same name that is a different knob, with the reason
SECOND = {
    "num_threads": "embed's inference threads: runtime (same bits with 1 or 2), default 2; training's are tracked",
    "eval_batch_size": "embed's rows per forward pass: runtime (same bits whatever the batch)",
}


def test_params_yaml_and_the_stage_params_are_generated_from_the_declarations(capsys):
    status = params_yaml.main(["--check"])
    assert status == 0, capsys.readouterr().out


def test_each_stage_tracks_the_non_runtime_knobs_of_the_sections_its_script_parses():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    listed = {name: stage.get("params", []) for name, stage in spec.items() if stage.get("params")}
    assert listed == params_yaml.stage_params(REPO)
    assert params_yaml.parsed_sections(REPO / "stages/evaluate.py") == ["data", "fusion", "evaluate", "report"]


def test_no_runtime_knob_is_tracked_by_any_stage():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    tracked = {key for stage in spec.values() for key in stage.get("params", [])}
    runtime = [f"{section}.{key}" for section in SECTIONS for key in untracked_keys(declaration(section))]
    assert runtime, "no runtime knob declared"
    for key in runtime:
        parents = {".".join(key.split(".")[:i]) for i in range(1, key.count(".") + 2)}
        assert not parents & tracked, f"{key} is tracked by a stage (through {sorted(parents & tracked)})"


def _knob_declarations() -> dict[str, list[str]]:
    """Knob name -> where a class body declares it with ``knob(...)`` (file:line), over all of src/rakuten."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "src/rakuten").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    call = getattr(item, "value", None)
                    if (
                        isinstance(item, ast.AnnAssign)
                        and isinstance(call, ast.Call)
                        and getattr(call.func, "id", "") == "knob"
                    ):
                        where = f"{path.relative_to(REPO)}:{item.lineno} ({node.name})"
                        found.setdefault(item.target.id, []).append(where)
    return found


def test_a_runtime_knob_that_shapes_a_report_stays_tracked():
    """The contact sheets are no part of the cleaning a model is trained with, but they are image_clean's
    output: changing them must redraw them."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert "image_clean.contact_sheet" in spec["image_clean"]["params"]
    assert "contact_sheet" not in untracked_keys(declaration("image_clean"))


def test_shared_knobs_are_declared_once():
    found = _knob_declarations()
    for name in SHARED:
        places = found.get(name, [])
        allowed = 2 if name in SECOND else 1
        assert 1 <= len(places) <= allowed, f"{name} declared {len(places)} times: {places}"


def _changed(value, tp, declared):
    """A valid value of the knob other than ``value``."""
    if tp is bool:
        return not value
    if tp is int:
        hi = declared.hi if declared.hi is not None else value + 2
        return value + 1 if value + 1 <= hi else value - 1
    if tp is str:
        if declared.choices:
            return next(c for c in declared.choices if c != value)
        return value + "_elsewhere"
    if tp is float:
        return value / 2 if value else 0.5
    return None


def test_changing_every_runtime_knob_leaves_dvc_status_clean(tiny_built_repo, tmp_path):
    repo = copy_built_repo(tiny_built_repo, tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    changed = []
    for section in SECTIONS:
        cls = declaration(section)
        runtime = untracked_keys(cls)
        for name, tp, declared in iter_knobs(cls):
            inside = name in runtime or any(name.startswith(r + ".") for r in runtime)
            tp = next((a for a in (_union_args(tp) or (tp,)) if a is not type(None)), tp)
            if not inside or dataclasses.is_dataclass(tp):
                continue
            new = _changed(dotted_value(params, f"{section}.{name}"), tp, declared)
            if new is not None:
                params = with_overrides(params, {f"{section}.{name}": new})
                changed.append(f"{section}.{name}")
    assert len(changed) >= 8, changed
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    result = dvc("status", cwd=repo)
    assert "up to date" in result.stdout, f"changed {changed}:\n{result.stdout}"

"""The shape rules of src/rakuten: small modules, short functions, packages that re-export nothing,
and one module per stage named after it."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "rakuten"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: where each stage's code lives: the module or package named after the stage, in its layer
STAGE_MODULES = {
    "sample": "data/sample",
    "ingest": "data/ingest.py",
    "image_hash": "image/image_hash.py",
    "split": "data/split.py",
    "text_clean": "text/text_clean.py",
    "image_clean": "image/image_clean.py",
    "label_audit": "evaluation/label_audit",
    "tfidf_svm": "models/tfidf_svm.py",
    "fasttext": "models/fasttext.py",
    "camembert": "models/camembert",
    "resnet50": "models/resnet50",
    "embed": "models/embed.py",
    "joint": "models/joint.py",
    "fusion": "fusion",
    "evaluate": "evaluation/evaluate.py",
    "submission": "serving/submission.py",
}


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_is_longer_than_the_bound():
    long = {
        str(p.relative_to(REPO)): n
        for p in _sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules above {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_longer_than_the_bound():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions above {MAX_FUNCTION_LINES} lines: {long}"


def test_package_inits_hold_a_docstring_only():
    """An ``__init__.py`` that imported a submodule would make every stage importing the package rerun for
    code it never executes (DVC deps are the import closure)."""
    offenders = []
    for init in SRC.rglob("__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        statements = body[1:] if body and isinstance(body[0], ast.Expr) else body
        if init.parent != SRC and statements:
            offenders.append(str(init.relative_to(REPO)))
    assert not offenders, offenders


def test_each_stage_runs_the_module_named_after_it():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert set(spec) == set(STAGE_MODULES)
    for stage, where in STAGE_MODULES.items():
        assert spec[stage]["cmd"] == f"python stages/{stage}.py"
        assert (SRC / where).exists(), where
        assert Path(where).stem == stage or Path(where).name == stage, (stage, where)
        deps = spec[stage]["deps"]
        path = f"src/rakuten/{where}"
        listed = [d for d in deps if isinstance(d, str)]
        assert any(d == path or d.startswith(path + "/") or path.startswith(d + "/") for d in listed), stage

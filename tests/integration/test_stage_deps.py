"""Each stage's code deps in dvc.yaml are exactly the code it executes (its import closure).

Why: `dvc repro` reruns a stage only when a declared dep changes. A module a stage imports but does
not declare makes its results go stale silently; a declared module it never runs makes it rerun for
nothing (e.g. a CamemBERT edit retraining ResNet). The closure rule is in `tools/import_closure.py`.
The end-to-end check (touch a module, `dvc status` lists exactly these stages) is in
`tests/integration/test_pipeline_dvc.py`.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from tools.import_closure import (
    REPO,
    Project,
    code_deps,
    compare,
    dep_path,
    registered_models,
    stage_script,
    stages,
    sync_dvc_yaml,
)


def test_every_stage_declares_exactly_the_code_it_executes():
    problems = compare()
    lines = []
    for name, found in problems.items():
        lines.append(f"  {name}:")
        lines += [f"    missing dep: {p}" for p in found["missing"]]
        lines += [f"    extra dep:   {p}" for p in found["extra"]]
    if problems:
        pytest.fail(
            "dvc.yaml code deps differ from what the stages execute (rule: tools/import_closure.py); "
            "fix dvc.yaml, or run `python -m tools.import_closure --write`:\n" + "\n".join(lines),
            pytrace=False,
        )


def test_no_model_stage_executes_another_models_module():
    project = Project()
    models = registered_models(project)
    spec = stages()
    for name, module in models.items():
        executed = project.stage_modules(stage_script(name, spec[name]))
        assert module in executed, (name, module)
        others = sorted(executed & (set(models.values()) - {module}))
        assert not others, f"stage {name} executes {others}: move the shared code out of the model module"


def test_no_dynamic_import_outside_the_closure_rule():
    found = Project().unclassified_dynamic_imports()
    assert not found, (
        "import by computed name: "
        + ", ".join(found)
        + "; say in tools/import_closure.py (DYNAMIC_SITES) what it loads, or import statically"
    )


def test_no_dep_hard_codes_a_path_that_params_yaml_sets():
    """A data folder chosen in params.yaml is a `${...}` dep, so DVC tracks the folder the stage reads."""

    def flat(node, prefix=""):
        for key, value in node.items():
            yield from flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    paths = {v.rstrip("/"): key for key, v in flat(params) if isinstance(v, str) and "/" in v}
    for name, stage in stages().items():
        for dep in stage.get("deps", []):
            dep = (next(iter(dep)) if isinstance(dep, dict) else dep).rstrip("/")
            assert dep not in paths, (
                f"dvc.yaml: stage {name}: dep {dep} is params.yaml {paths[dep]}; write ${{{paths[dep]}}}"
            )
    assert "${data.raw_dir}" in stages()["ingest"]["deps"]


def test_folder_deps_ignore_python_bytecode():
    """`__pycache__` appears beside the sources once Python ran: it must not change a folder dep's hash."""
    ignored = [line.strip() for line in (REPO / ".dvcignore").read_text().splitlines()]
    assert "__pycache__/" in ignored or "__pycache__" in ignored


def test_the_write_command_fixes_code_deps_and_touches_nothing_else(tmp_path):
    for rel in ("src", "stages"):
        shutil.copytree(REPO / rel, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    before = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for stage in before["stages"].values():  # start from no code deps at all
        stage["deps"] = [d for d in stage["deps"] if dep_path(d) not in code_deps(stage)]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(before, sort_keys=False))
    assert set(compare(tmp_path)) == set(before["stages"])
    (tmp_path / "dvc.yaml").write_text(sync_dvc_yaml(tmp_path))
    assert compare(tmp_path) == {}
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    fixed = sync_dvc_yaml(tmp_path)
    (tmp_path / "dvc.yaml").write_text(fixed)
    assert compare(tmp_path) == {}
    assert sync_dvc_yaml(tmp_path) == fixed
    after, original = yaml.safe_load(fixed), yaml.safe_load((REPO / "dvc.yaml").read_text())
    for stage in (*after["stages"].values(), *original["stages"].values()):
        stage["deps"] = [d for d in stage["deps"] if dep_path(d) not in code_deps(stage)]
    assert after == original


# ---------------------------------------------------------------------- the rule itself, on a toy project


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


REGISTRY = """
    import importlib
    from dataclasses import dataclass

    @dataclass
    class ModelSpec:
        name: str
        module: str
        modality: str

    MODELS = {s.name: s for s in (ModelSpec("alpha", "rakuten.models.alpha", "text"),)}

    def load_module(name):
        return importlib.import_module(MODELS[name].module)
"""


@pytest.fixture
def toy(tmp_path) -> Path:
    write(
        tmp_path,
        {
            "src/rakuten/__init__.py": "",
            "src/rakuten/core.py": "X = 1\n",
            "src/rakuten/lazy.py": "Y = 2\n",
            "src/rakuten/unused.py": "",
            "src/rakuten/pkg/__init__.py": "",
            "src/rakuten/pkg/a.py": """
            from . import b
            from .c import helper
            from rakuten import core

            def later():
                from rakuten import lazy
                return lazy.Y
        """,
            "src/rakuten/pkg/b.py": "",
            "src/rakuten/pkg/c.py": "def helper():\n    return 1\n",
            "src/rakuten/pkg/d.py": "",
            "src/rakuten/models/__init__.py": "",
            "src/rakuten/contracts/__init__.py": "",
            "src/rakuten/contracts/registry.py": REGISTRY,
            "src/rakuten/serving/__init__.py": "",
            "src/rakuten/models/alpha.py": "import rakuten.core\n",
            "src/rakuten/serving/serve.py": """
            from rakuten.contracts import registry

            def predict(name):
                return registry.load_module(name)

            def names():
                return list(registry.MODELS)
        """,
            "stages/first.py": "import rakuten.pkg.a\n",
            "stages/reads_registry.py": "from rakuten.serving.serve import names\nnames()\n",
            "stages/loads_models.py": "from rakuten.serving import serve\n\ndef main():\n    serve.predict('alpha')\n",
            "dvc.yaml": yaml.safe_dump(
                {
                    "stages": {
                        "first": {
                            "cmd": "python stages/first.py",
                            "deps": [
                                "stages/first.py",
                                "src/rakuten/pkg",
                                "src/rakuten/__init__.py",
                                "src/rakuten/unused.py",
                            ],
                        },
                    }
                }
            ),
        },
    )
    return tmp_path


def test_static_closure_follows_every_import_form(toy):
    files = Project(toy).stage_files("stages/first.py")
    assert files == {
        "stages/first.py",
        "src/rakuten/__init__.py",
        "src/rakuten/pkg/__init__.py",
        "src/rakuten/pkg/a.py",
        "src/rakuten/pkg/b.py",
        "src/rakuten/pkg/c.py",
        "src/rakuten/core.py",
        "src/rakuten/lazy.py",
    }


def test_dynamic_loads_count_only_where_a_stage_reaches_them(toy):
    project = Project(toy)
    assert "rakuten.models.alpha" not in project.stage_modules("stages/reads_registry.py")
    assert {"rakuten.models.alpha", "rakuten.core"} <= project.stage_modules("stages/loads_models.py")


def test_compare_names_missing_and_extra_files(toy):
    assert compare(toy) == {
        "first": {
            "missing": ["src/rakuten/core.py", "src/rakuten/lazy.py"],
            "extra": ["src/rakuten/pkg/d.py (in folder dep src/rakuten/pkg)", "src/rakuten/unused.py"],
        }
    }


def test_an_unclassified_dynamic_import_is_reported(toy):
    write(toy, {"src/rakuten/plugin.py": "import importlib\n\ndef load(n):\n    return importlib.import_module(n)\n"})
    assert Project(toy).unclassified_dynamic_imports() == ["src/rakuten/plugin.py:4 (in load)"]

"""``params.yaml`` and the ``params:`` lists of ``dvc.yaml``, generated from the knob declarations.

``python -m tools.params_yaml --write`` rewrites both; ``--check`` exits 1, naming what differs, when
either is out of date (``tests/integration/test_knob_declarations.py`` runs it). A stage's params are the
tracked keys (:func:`rakuten.core.knob_yaml.tracked_keys`) of every section its script parses with
``from_params(Class, params, "section")``, found in the script's code (``ast``, no import), so the
sections a stage reads are declared once, in the script (``stages/model.py <name>`` reads section ``<name>``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

from rakuten.core.knob_yaml import tracked_keys
from rakuten.serving.sections import SECTIONS, declaration, render_params

REPO = Path(__file__).resolve().parents[1]
#: the stage script of a registered model without a script of its own: its argument names its section
GENERIC_STAGE = "stages/model.py"


def parsed_sections(script: Path) -> list[str]:
    """The sections ``script`` parses: the literal third argument of each ``from_params(...)`` call, in order."""
    found: list[str] = []
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "from_params":
            args = node.args[2:3] or [k.value for k in node.keywords if k.arg == "key"]
            if args and isinstance(args[0], ast.Constant) and args[0].value not in found:
                found.append(args[0].value)
    return sorted(found, key=list(SECTIONS).index)


def stage_params(root: Path = REPO) -> dict[str, list[str]]:
    """Stage name -> the params ``dvc.yaml`` should list for it (stages that parse no section: none)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, stage in spec.items():
        _, script, *args = stage["cmd"].split()
        sections = parsed_sections(root / script)
        if script == GENERIC_STAGE:  # `python stages/model.py <name>` parses section <name>
            sections += [section for section in args if section not in sections]
        keys = [key for section in sections for key in tracked_keys(declaration(section), section)]
        if keys:
            out[name] = keys
    return out


def sync_dvc_yaml(root: Path = REPO) -> str:
    """``dvc.yaml`` with each stage's ``params:`` list replaced by :func:`stage_params`; nothing else changes."""
    wanted = stage_params(root)
    out: list[str] = []
    stage, in_params = None, False
    for line in (root / "dvc.yaml").read_text(encoding="utf-8").splitlines(keepends=True):
        text, indent = line.split("#")[0].strip(), len(line) - len(line.lstrip())
        if indent == 2 and text.endswith(":") and not text.startswith("-"):
            stage, in_params = text[:-1], False
        elif indent == 4 and text and not text.startswith("-"):
            in_params = text == "params:"
            if in_params and stage in wanted:
                out.append(line)
                out += [f"      - {key}\n" for key in wanted[stage]]
                continue
        elif in_params and text.startswith("- "):
            continue
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    targets = {REPO / "params.yaml": render_params(), REPO / "dvc.yaml": sync_dvc_yaml(REPO)}
    stale = [p.name for p, text in targets.items() if p.read_text(encoding="utf-8") != text]
    if "--write" in argv:
        for path, text in targets.items():
            path.write_text(text, encoding="utf-8")
        return 0
    if stale:
        print(f"out of date: {', '.join(stale)}; run `python -m tools.params_yaml --write`")  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

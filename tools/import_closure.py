"""Which files of ``src/rakuten`` each DVC stage executes, computed from the code (``ast``, no import).

The rule, for a stage whose ``cmd`` is ``python stages/<name>.py``:

1. **Static imports, wherever they are.** The closure starts at ``stages/<name>.py`` and follows every
   ``import`` statement of every module it reaches, at module level *or inside a function*:
   ``import rakuten.x``, ``from rakuten.x import y`` (``y`` a name or a submodule), ``from rakuten import x``,
   relative imports, ``importlib.import_module("rakuten.x")`` with a literal name. Importing ``rakuten.a.b``
   also runs ``rakuten/__init__.py`` and ``rakuten/a/__init__.py``, so those count too. An import inside a
   function counts even if the stage never calls that function: a stage may rerun for nothing, it never
   goes stale.
2. **Dynamic imports count only where a stage can reach them.** The registry's loaders import model
   modules by name (the ``ModelSpec`` entries, read from ``registry.py``): ``load_module(name)`` any
   registered model, ``load_encoders(modality)`` the models marked ``encoder=True``,
   ``load_report_image_module()`` the one marked ``report_image=True``. Those modules belong to a stage
   only when the stage can call that loader: its script, or module-level code of a module in its closure,
   references it directly or through module-level functions (names resolved through the imports; methods,
   class bodies and a module passed as a value count as reachable). ``embed`` reaches ``load_encoders``,
   ``evaluate`` ``load_report_image_module`` (the report's Grad-CAM); ``fusion`` reads ``registry.MODELS``
   only, and ``submission`` applies ``models/fusion`` to the probability tables the model stages wrote.
   The ``rakuten predict`` command (``cli`` -> ``predict_csv`` -> ``load_module``), which is not a stage,
   loads any model by name. A generic model stage, ``cmd: python stages/model.py <name>``, loads the model
   it names: for it ``load_module`` imports that model's module only.
3. **Any other dynamic import of project code is an error** (:func:`unclassified_dynamic_imports`) until this
   file says what it loads and when.

``python -m tools.import_closure`` prints each stage's code deps as dvc.yaml should list them;
``python -m tools.import_closure --write`` puts them into dvc.yaml (only the ``src/``/``stages/`` deps change).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "rakuten"
#: function of a module -> how to list the modules it imports by name (rule 2)
DYNAMIC_SITES = {
    ("rakuten.contracts.registry", "load_module"): "registered_model_modules",
    ("rakuten.contracts.registry", "load_encoders"): "registered_encoder_modules",
    ("rakuten.contracts.registry", "load_report_image_module"): "report_image_modules",
}
LOAD_MODULE = ("rakuten.contracts.registry", "load_module")
#: the script of a model stage without one of its own: ``cmd: python stages/model.py <name>`` (rule 2)
GENERIC_MODEL_SCRIPT = "stages/model.py"

Node = tuple[str, "str | None"]  # (module or script path, top-level function); None = module-level code


@dataclass
class Module:
    """What the rules need from one source file."""

    name: str  # dotted module name, or the script's path for a stage script
    path: Path
    is_package: bool = False
    imports: set[str] = field(default_factory=set)  # project modules imported anywhere
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> project module
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # local name -> (module, attribute)
    functions: dict[str, ast.AST] = field(default_factory=dict)  # top-level def name -> node
    dynamic: list[tuple[int, str | None]] = field(default_factory=list)  # (line, enclosing def) of non-literal imports
    tree: ast.Module | None = None


class Project:
    """The project modules of one checkout (``root``), parsed lazily."""

    def __init__(self, root: Path = REPO):
        self.root = Path(root)
        self.src = self.root / "src"
        self._parsed: dict[str, Module] = {}  # module name or script path -> its parse

    # ------------------------------------------------------------------ files and names
    def module_file(self, name: str) -> Path | None:
        base = self.src.joinpath(*name.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def is_module(self, name: str) -> bool:
        return (name == PACKAGE or name.startswith(PACKAGE + ".")) and self.module_file(name) is not None

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def all_modules(self) -> list[str]:
        pkg = self.src / PACKAGE
        out = []
        for path in sorted(pkg.rglob("*.py")):
            parts = path.relative_to(self.src).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        return out

    def module(self, name: str) -> Module:
        if name not in self._parsed:
            path = self.module_file(name)
            self._parsed[name] = self._parse(name, path, path.name == "__init__.py")
        return self._parsed[name]

    def script(self, rel_path: str) -> Module:
        if rel_path not in self._parsed:
            self._parsed[rel_path] = self._parse(rel_path, self.root / rel_path, False)
        return self._parsed[rel_path]

    # ------------------------------------------------------------------ parsing
    def _parse(self, name: str, path: Path, is_package: bool) -> Module:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        mod = Module(name, path, is_package, tree=tree)
        package = "" if name.endswith(".py") else name if is_package else name.rpartition(".")[0]
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                mod.functions[stmt.name] = stmt
        for owner, node in _walk_with_owner(tree):
            if isinstance(node, ast.Import):
                self._add_import(mod, node)
            elif isinstance(node, ast.ImportFrom):
                self._add_import_from(mod, node, package, path)
            elif isinstance(node, ast.Call) and _is_import_call(node) and node.args:
                _add_import_call(mod, node, owner)
        return mod

    def _add_import(self, mod: Module, node: ast.Import) -> None:
        for alias in node.names:
            if self.is_module(alias.name) or alias.name.split(".")[0] == PACKAGE:
                mod.imports.add(alias.name)
                if alias.asname:
                    mod.aliases[alias.asname] = alias.name
                else:
                    mod.aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def _add_import_from(self, mod: Module, node: ast.ImportFrom, package: str, path: Path) -> None:
        base = self._from_base(node, package, path)
        if base is None:
            return
        mod.imports.add(base)
        for alias in node.names:
            local = alias.asname or alias.name
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and self.is_module(sub):
                mod.imports.add(sub)
                mod.aliases[local] = sub
            elif alias.name != "*":
                mod.names[local] = (base, alias.name)

    def _from_base(self, node: ast.ImportFrom, package: str, path: Path) -> str | None:
        if node.level:
            parts = package.split(".") if package else []
            if not parts or node.level - 1 > len(parts) - 1:
                raise ValueError(f"{path}:{node.lineno}: relative import outside the {PACKAGE} package")
            parts = parts[: len(parts) - (node.level - 1)]
            return ".".join(parts + ([node.module] if node.module else []))
        if node.module and node.module.split(".")[0] == PACKAGE:
            return node.module
        return None

    # ------------------------------------------------------------------ rule 1: static closure
    def static_closure(self, start: set[str]) -> set[str]:
        """Project modules reached from ``start`` by static imports, with every parent package."""
        seen: set[str] = set()
        todo = list(start)
        while todo:
            name = todo.pop()
            for parent in _parents(name):
                if parent in seen:
                    continue
                if not self.is_module(parent):
                    raise ValueError(f"import of {parent}: no such module under {self.src}")
                seen.add(parent)
                todo.extend(self.module(parent).imports)
        return seen

    # ------------------------------------------------------------------ rule 2: dynamic imports
    def registered_model_modules(self) -> list[str]:
        """The modules ``registry.load_module`` may import (rule 2)."""
        return list(registered_models(self).values())

    def registered_encoder_modules(self) -> list[str]:
        """The modules ``registry.load_encoders`` may import: the models marked ``encoder=True`` (rule 2)."""
        return [s["module"] for s in registered_specs(self).values() if s.get("encoder")]

    def report_image_modules(self) -> list[str]:
        """The module ``registry.load_report_image_module`` imports: the model marked ``report_image=True``."""
        return [s["module"] for s in registered_specs(self).values() if s.get("report_image")]

    def _resolve(self, mod: Module, name: str, depth: int = 0) -> set[Node]:
        """Nodes that ``name`` in ``mod`` may denote: a function, or every function of a module value."""
        if name in mod.functions:
            return {(mod.name, name)}
        if name in mod.aliases:
            return self._module_value(mod.aliases[name])
        if name in mod.names and depth < 20:
            base, attr = mod.names[name]
            return self._resolve(self.module(base), attr, depth + 1) if self.is_module(base) else set()
        return set()

    def _resolve_chain(self, mod: Module, dotted: list[str]) -> set[Node]:
        """``a.b.c`` in ``mod``: follow module aliases and submodules, then resolve the first other name."""
        head, *rest = dotted
        if head not in mod.aliases:
            return self._resolve(mod, head)
        target = mod.aliases[head]
        for part in rest:
            if self.is_module(f"{target}.{part}"):
                target = f"{target}.{part}"
            else:
                return self._resolve(self.module(target), part)
        return self._module_value(target)

    def _module_value(self, module: str) -> set[Node]:
        """A module used as a value (``fit_and_report(name, camembert, ...)``): any of its functions may run."""
        if not self.is_module(module):
            return set()
        return {(module, f) for f in self.module(module).functions} | {(module, None)}

    def _references(self, mod: Module, node: ast.AST, refs: set[Node]) -> set[Node]:
        """Every project function (or module value) that code under ``node`` names."""
        if isinstance(node, ast.Attribute):
            dotted, base = [], node
            while isinstance(base, ast.Attribute):
                dotted.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name):
                refs |= self._resolve_chain(mod, [base.id, *dotted])
                return refs
        elif isinstance(node, ast.Name):
            refs |= self._resolve(mod, node.id)
            return refs
        for child in ast.iter_child_nodes(node):
            self._references(mod, child, refs)
        return refs

    def _body(self, mod: Module, func: str | None) -> list[ast.AST]:
        if func is not None:
            return [mod.functions[func]]
        out: list[ast.AST] = []
        for stmt in mod.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.extend(stmt.decorator_list)
                out.extend(d for d in (*stmt.args.defaults, *stmt.args.kw_defaults) if d is not None)
            else:
                out.append(stmt)
        return out

    # ------------------------------------------------------------------ a stage
    def stage_modules(self, script: str, model: str | None = None) -> set[str]:
        """Project modules executed by the stage script ``script`` (rules 1 and 2); ``model``: the registered
        model a generic model stage (:data:`GENERIC_MODEL_SCRIPT`) trains, whose module it loads."""
        main = self.script(script)
        start = set(main.imports)
        while True:
            closure = self.static_closure(start)
            reached = self._reachable(main, closure)
            extra = set()
            for site, lister in DYNAMIC_SITES.items():
                if site in reached:
                    found = (
                        [registered_models(self)[model]] if model and site == LOAD_MODULE else getattr(self, lister)()
                    )
                    extra |= {m for m in found if m.split(".")[0] == PACKAGE}
            if extra <= start:
                return closure
            start |= extra

    def _reachable(self, main: Module, closure: set[str]) -> set[Node]:
        todo: list[tuple[Module, str | None]] = [(main, None)]
        todo += [(self.module(m), None) for m in closure]
        seen: set[Node] = set()
        while todo:
            mod, func = todo.pop()
            key = (mod.name, func)
            if key in seen:
                continue
            seen.add(key)
            refs: set[Node] = set()
            for node in [mod.tree] if mod is main else self._body(mod, func):
                self._references(mod, node, refs)
            for target, tfunc in refs:
                if target == main.name:
                    continue
                if self.is_module(target) and (tfunc is None or tfunc in self.module(target).functions):
                    todo.append((self.module(target), tfunc))
        return seen

    def stage_files(self, script: str, model: str | None = None) -> set[str]:
        """The files a stage executes: its script and its project modules, as repository paths."""
        return {script} | {self.rel(self.module_file(m)) for m in self.stage_modules(script, model)}

    def unclassified_dynamic_imports(self) -> list[str]:
        """``import_module``/``__import__`` calls on a computed name that rule 2 does not cover."""
        out = []
        for name in self.all_modules():
            for line, owner in self.module(name).dynamic:
                if (name, owner) not in DYNAMIC_SITES:
                    out.append(f"{self.rel(self.module_file(name))}:{line} (in {owner or 'module-level code'})")
        return out


def registered_specs(project: Project) -> dict[str, dict]:
    """``registry.MODELS`` as ``{name: {"module": ..., <keyword>: <constant>, ...}}``, read from the
    ``ModelSpec(name, module, modality, ...)`` calls of ``registry.py`` (the source, not the imported dict,
    which tests may extend at run time); keywords with a non-constant value are left out."""
    found = {}
    for node in ast.walk(project.module("rakuten.contracts.registry").tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "ModelSpec"
            and len(node.args) >= 2
            and all(isinstance(a, ast.Constant) for a in node.args[:2])
        ):
            keywords = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            found[node.args[0].value] = {**keywords, "module": node.args[1].value}
    if not found:
        raise ValueError("src/rakuten/contracts/registry.py: no ModelSpec(name, module, modality) entries found")
    return found


def registered_models(project: Project) -> dict[str, str]:
    """``registry.MODELS`` as ``{name: module}`` (:func:`registered_specs`)."""
    return {name: spec["module"] for name, spec in registered_specs(project).items()}


def _add_import_call(mod: Module, node: ast.Call, owner: str | None) -> None:
    """``importlib.import_module(...)``: a literal project name is an import; anything else is dynamic."""
    target = node.args[0]
    if isinstance(target, ast.Constant) and isinstance(target.value, str):
        if target.value.split(".")[0] == PACKAGE:
            mod.imports.add(target.value)
    elif isinstance(target, ast.JoinedStr) and _fstring_prefix(target).split(".")[0] not in ("", PACKAGE):
        return  # e.g. f"spacy.lang.{lang}.stop_words": another library
    else:
        mod.dynamic.append((node.lineno, owner))


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _is_import_call(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__")
    )


def _fstring_prefix(node: ast.JoinedStr) -> str:
    first = node.values[0] if node.values else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""


def _walk_with_owner(tree: ast.Module):
    """Every node with the top-level function that holds it (None at module level or in a class)."""
    for stmt in tree.body:
        owner = stmt.name if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        for node in ast.walk(stmt):
            yield owner, node


# ---------------------------------------------------------------------- dvc.yaml
def stages(root: Path = REPO) -> dict[str, dict]:
    """The ``stages`` of ``dvc.yaml`` as parsed YAML (``${...}`` templates stay plain strings)."""
    return yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def stage_command(name: str, stage: dict) -> tuple[str, str | None]:
    """``(script, model)`` of a stage's ``cmd``: ``python stages/<name>.py`` -> (that script, None);
    ``python stages/model.py <name>`` (a model stage without a script of its own) -> (that script, name)."""
    script = f"stages/{name}.py"
    if stage.get("cmd") == f"python {script}":
        return script, None
    if stage.get("cmd") == f"python {GENERIC_MODEL_SCRIPT} {name}":
        return GENERIC_MODEL_SCRIPT, name
    raise ValueError(
        f"dvc.yaml: stage {name}: cmd {stage.get('cmd')!r}, expected 'python {script}' "
        f"(or 'python {GENERIC_MODEL_SCRIPT} {name}' for a registered model)"
    )


def stage_script(name: str, stage: dict) -> str:
    """``stages/<name>.py`` (or the generic model script), checked against the stage's ``cmd``."""
    return stage_command(name, stage)[0]


def stage_files(project: Project, name: str, stage: dict) -> set[str]:
    """The files stage ``name`` executes (:meth:`Project.stage_files` of its command)."""
    return project.stage_files(*stage_command(name, stage))


def dep_path(dep) -> str:
    return (next(iter(dep)) if isinstance(dep, dict) else str(dep)).rstrip("/")


def code_deps(stage: dict) -> list[str]:
    """The deps under ``src/`` or ``stages/``: the code a stage declares."""
    return [p for p in map(dep_path, stage.get("deps", [])) if p.split("/")[0] in ("src", "stages")]


def compare(root: Path = REPO, project: Project | None = None) -> dict[str, dict[str, list[str]]]:
    """Per stage, the code files it executes but does not declare (``missing``), and the declared code
    it does not execute (``extra``; a folder dep is expanded to its ``.py`` files)."""
    root = Path(root)
    project = project or Project(root)
    out = {}
    for name, stage in stages(root).items():
        expected = stage_files(project, name, stage)
        covered, extra = set(), []
        for dep in code_deps(stage):
            path = root / dep
            if path.is_dir():
                files = {project.rel(p) for p in path.rglob("*.py") if "__pycache__" not in p.parts}
                covered |= files & expected
                extra += sorted(f"{f} (in folder dep {dep})" for f in files - expected)
                if not files:
                    extra.append(f"{dep} (folder without Python files)")
            elif dep in expected:
                covered.add(dep)
            else:
                extra.append(dep if path.exists() else f"{dep} (no such file)")
        missing = sorted(expected - covered)
        if missing or extra:
            out[name] = {"missing": missing, "extra": extra}
    return out


def suggested_deps(name: str, stage: dict, project: Project) -> list[str]:
    """The stage's code deps as dvc.yaml should list them: the script, then files, a whole folder
    (e.g. ``src/rakuten/text``) where the stage executes every module in it."""
    files = stage_files(project, name, stage)
    folders = []
    for folder in sorted({p.rsplit("/", 1)[0] for p in files if p.startswith(f"src/{PACKAGE}/")}):
        path = project.root / folder
        if folder == f"src/{PACKAGE}" or any(folder.startswith(f + "/") for f in folders):
            continue
        if all(project.rel(p) in files for p in path.rglob("*.py") if "__pycache__" not in p.parts):
            folders.append(folder)
    rest = sorted(f for f in files if f.startswith("src/") and not any(f.startswith(d + "/") for d in folders))
    return [stage_script(name, stage), *sorted(folders + rest)]


def sync_dvc_yaml(root: Path = REPO) -> str:
    """``dvc.yaml`` with every stage's code deps replaced by :func:`suggested_deps`, placed first in its
    ``deps:`` list; every other line (data deps, comments, params, outs) is kept as it is."""
    project = Project(root)
    spec = stages(root)
    out, stage, in_deps, pending = [], None, False, False
    deps_indent = 4
    for line in (Path(root) / "dvc.yaml").read_text(encoding="utf-8").splitlines(keepends=True):
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if pending and text and not text.startswith("#"):
            item_indent = indent if text.startswith("- ") else deps_indent + 2
            out += [f"{' ' * item_indent}- {dep}\n" for dep in suggested_deps(stage, spec[stage], project)]
            pending = False
        if indent == 2 and text.split(":")[0] in spec:
            stage, in_deps = text.split(":")[0], False
        elif stage is not None and indent == 4 and text and not text.startswith("- "):
            in_deps = pending = text.split("#")[0].strip() in ("deps:", "deps: []")
            deps_indent = indent
            if text.startswith("deps: []"):
                line = line.replace("deps: []", "deps:", 1)
        item = text[2:].split("#")[0].strip() if text.startswith("- ") else None
        if in_deps and item and item.split("/")[0] in ("src", "stages"):
            continue
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> None:
    """Print each stage's code deps; ``--write`` puts them into dvc.yaml (nothing else changes)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if "--write" in argv:
        (REPO / "dvc.yaml").write_text(sync_dvc_yaml(REPO), encoding="utf-8")
        return
    project = Project()
    for name, stage in stages().items():
        print(f"{name}:")
        for dep in suggested_deps(name, stage, project):
            print(f"  - {dep}")


if __name__ == "__main__":
    main()

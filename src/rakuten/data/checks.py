"""``rakuten check``: find the files that would hang or mislead DVC before DVC sees them.

Why: ``dvc repro`` and ``dvc status`` hash every file of a folder dependency (``data.raw_dir``) by
opening it. A FIFO there blocks that ``open`` forever, silently, with no CPU used (DVC 3.x prints
nothing after "Lockfile for 'dvc.yaml' not found" in ``-v`` mode); a device file is read without
end; a dangling symlink or one leading outside the project makes the hash depend on files nobody
tracks. The pipeline's own readers already skip such files, but DVC runs before them and cannot be
patched here, so this check walks the input folders first, with ``os.scandir`` / ``lstat`` /
``stat`` only: it never opens a file, so it cannot block on one.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from rakuten.core.errors import PipelineError

log = logging.getLogger(__name__)

DVC_FILE = "dvc.yaml"
_OUT_KEYS = ("outs", "metrics", "plots")
_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_INTERPOLATION = re.compile(r"\$\{\s*([^}]+?)\s*\}")


@dataclass
class CheckResult:
    """What the walk saw: regular files counted, one line per offending path."""

    files: int = 0
    problems: list[str] = field(default_factory=list)


def _special_kind(mode: int) -> str | None:
    """None for a regular file or a folder (of a stat, never an lstat); else what the file is."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, name in _SPECIAL:
        if test(mode):
            return name
    return "a special file"


def _resolve(template: str, params: Mapping[str, Any]) -> str | None:
    """``template`` with DVC's ``${a.b}`` taken from the params file; None when a key is missing
    (DVC itself reports that one)."""

    def value(match: re.Match) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(match.group(1))
            node = node[part]
        return str(node)

    try:
        return _INTERPOLATION.sub(value, template)
    except KeyError:
        return None


def _names(entries: Iterable[Any]) -> list[str]:
    """Paths of a dvc.yaml ``deps`` / ``outs`` list, whose items are a path or ``{path: options}``."""
    out = []
    for entry in entries or []:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, Mapping) and len(entry) == 1:
            out.append(str(next(iter(entry))))
    return out


def input_paths(project: Path, params: Mapping[str, Any], raw_dir: str) -> list[Path]:
    """The paths DVC hashes that no stage writes: every ``dvc.yaml`` dependency that is not (inside)
    a stage output, params interpolated, and always ``raw_dir``. Sorted, without duplicates."""
    found = {raw_dir}
    dvc_file = project / DVC_FILE
    if dvc_file.is_file():
        try:
            stages = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages") or {}
        except (yaml.YAMLError, AttributeError) as exc:
            raise PipelineError(
                f"{dvc_file}: cannot read its stages ({str(exc).splitlines()[0]}); expected a valid dvc.yaml"
            ) from None
        outs, deps = set(), set()
        for stage in stages.values() if isinstance(stages, Mapping) else []:
            if not isinstance(stage, Mapping):
                continue
            for key in _OUT_KEYS:
                outs.update(filter(None, (_resolve(p, params) for p in _names(stage.get(key)))))
            deps.update(filter(None, (_resolve(p, params) for p in _names(stage.get("deps")))))
        out_parts = [Path(os.path.normpath(o)).parts for o in outs]
        for dep in deps:
            parts = Path(os.path.normpath(dep)).parts
            if not any(parts[: len(o)] == o for o in out_parts):
                found.add(dep)
    return sorted({project / p for p in found})


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def check_tree(root: Path, project: Path, result: CheckResult) -> None:
    """Walk ``root`` (a file or a folder) without opening anything, adding to ``result``.

    Refused: FIFOs, sockets, device files (also as a symlink's target), dangling or looping
    symlinks, and symlinks leading outside both the project and ``root``. ``root`` itself may be a
    symlink to anywhere (a raw folder on another disk is the user's choice); a missing ``root`` is
    skipped (DVC names a missing dependency itself)."""
    if not os.path.lexists(root):
        log.debug("%s: not found, not checked (DVC names a missing dependency itself)", root)
        return
    allowed = (os.path.realpath(project), os.path.realpath(root))
    visited: set[str] = set()
    pending = [root]
    while pending:
        path = pending.pop()
        problem, kind = _check_one(path, path is root, allowed)
        if problem:
            result.problems.append(problem)
        elif kind == "dir":
            real = os.path.realpath(path)
            if real in visited:  # a symlink back to a folder already walked: count it once, never loop
                continue
            visited.add(real)
            try:
                with os.scandir(path) as entries:
                    pending.extend(Path(e.path) for e in sorted(entries, key=lambda e: e.name, reverse=True))
            except OSError as exc:
                result.problems.append(
                    f"{path}: folder cannot be listed ({exc.strerror}); expected a readable folder (DVC has to hash it)"
                )
        elif kind == "file":
            result.files += 1


def _check_one(path: Path, is_root: bool, allowed: tuple[str, ...]) -> tuple[str | None, str | None]:
    """``(problem line, None)`` or ``(None, "dir" | "file")`` for one path, by lstat/stat only."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"{path}: cannot be inspected ({exc.strerror})", None
    if stat.S_ISLNK(mode):
        target = os.path.realpath(path)
        try:
            mode = os.stat(path).st_mode  # follows the link; stat never opens the target
        except FileNotFoundError:
            return (
                f"{path}: symbolic link to {os.readlink(path)}, which does not exist; "
                "expected an existing file or folder (remove the link)"
            ), None
        except OSError as exc:
            return (
                f"{path}: symbolic link that cannot be followed ({exc.strerror}); "
                "expected a link to an existing file (remove the link)"
            ), None
        what = f"a symbolic link to {target}, which is "
    else:
        target, what = "", ""
    kind = _special_kind(mode)
    if kind is not None:  # named first: it is what hangs DVC
        return (
            f"{path}: is {what}{kind}; DVC would block or read forever hashing it "
            "(remove it, or move it out of the data folder)"
        ), None
    if target and not is_root and not _inside(target, allowed):
        return (
            f"{path}: symbolic link to {target}, outside the project; expected files inside the project "
            "(copy the file in, or remove the link)"
        ), None
    return None, "dir" if stat.S_ISDIR(mode) else "file"


def check_inputs(paths: Iterable[Path], project: Path) -> CheckResult:
    """Check each of ``paths`` (files or folders) as :func:`check_tree` does."""
    result = CheckResult()
    for path in paths:
        check_tree(path, project, result)
    return result

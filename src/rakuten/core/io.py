"""Atomic writes and small readers shared by every stage.

Every output is written to a temporary sibling and renamed into place at the end, so a stage
killed mid-run never leaves a file or directory that DVC could mistake for a valid output.

The output-path rule (why: a mistyped ``--output`` must never cost a user their files): an
output replaces only what this program wrote there before. A file output may replace a regular
file (or a symlink: the link is replaced, never its target); a directory output may replace a
directory that carries the :data:`OUTPUT_MARKER` file every directory output is written with.
Anything else that already sits at the path (a directory where a file is expected, a folder of
the user's, a FIFO, a device) is a :class:`PipelineError` naming the path, and nothing is touched.
Outputs get the permissions of a normally created file (``0666``/``0777`` minus the umask), not
the owner-only ones of Python's temporary files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from rakuten.core.errors import PipelineError

OUTPUT_MARKER = ".rakuten-output"
_MARKER_TEXT = "written by the rakuten pipeline: this folder is replaced as a whole by the next run\n"
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a special file"


def check_output_path(path: Path, is_dir: bool) -> None:
    """Raise :class:`PipelineError` unless writing ``path`` would replace only this program's own output."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PipelineError(f"{path}: cannot inspect the output path ({exc.strerror})") from None
    mode = info.st_mode
    if stat.S_ISLNK(mode) and not is_dir:
        return  # the link itself is replaced; its target is never written or removed
    if is_dir:
        if not stat.S_ISDIR(mode):
            what = "a file" if stat.S_ISREG(mode) else "a symbolic link" if stat.S_ISLNK(mode) else _kind(mode)
            raise PipelineError(
                f"{path}: is {what}, expected a directory output of this pipeline there; "
                "nothing was written (move it away or choose another path)"
            )
        if not (path / OUTPUT_MARKER).is_file():
            raise PipelineError(
                f"{path}: is an existing directory this pipeline did not write (no {OUTPUT_MARKER} "
                "in it); nothing was written (move it away or choose another path)"
            )
        return
    if stat.S_ISDIR(mode):
        raise PipelineError(f"{path}: is a directory, expected a file path for the output; nothing was written")
    if not stat.S_ISREG(mode):
        raise PipelineError(
            f"{path}: is {_kind(mode)}, expected a regular file path for the output; nothing was written"
        )


def _same_or_inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` (same resolved path, or the same file through a hard link) or lies inside folder ``b``."""
    ra, rb = a.resolve(), b.resolve()
    if ra == rb or ra.is_relative_to(rb):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _writable_parent(path: Path) -> Path | None:
    """The nearest existing folder above ``path`` when the program cannot create files in it (else None).

    Tried, not guessed: a probe file is created and removed, since permission bits do not tell for
    root, read-only mounts or ``/proc``."""
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".rakuten-probe-", suffix=".tmp", dir=parent)
    except OSError:
        return parent
    os.close(fd)
    os.unlink(probe)
    return None


def check_run_paths(inputs: Mapping[str, Path], outputs: Mapping[str, tuple[Path, bool]]) -> None:
    """One rule for every path a command writes, checked before any work.

    ``inputs`` and ``outputs`` map the option that names a path (``--input``, ``--explain``...) to it;
    an output is ``(path, is_dir)``. An output may not be an input or lie inside an input folder (nor
    hold an input inside it), may not be or contain another output of the same run, must replace only
    this program's own output (:func:`check_output_path`) and must sit in a folder the program can
    write. The first problem is one :class:`PipelineError` naming both options; nothing is touched.
    """
    for option, (path, is_dir) in outputs.items():
        for source, given in inputs.items():
            if _same_or_inside(path, given) or (is_dir and _same_or_inside(given, path)):
                out, src = path.resolve(), given.resolve()
                if is_dir and out != src and src.is_relative_to(out):
                    how = "holds"
                else:
                    how = "is" if out == src or not given.is_dir() else "is inside"
                raise PipelineError(
                    f"{option} {path}: {how} {source} {given}; an output never replaces or "
                    f"writes into an input: choose another {option}"
                )
        for other, (other_path, _) in outputs.items():
            if other == option:
                continue
            if _same_or_inside(path, other_path):
                raise PipelineError(f"{option} {path}: is also {other} {other_path}; give each output its own path")
        blocked = _writable_parent(path)
        if blocked is not None:
            raise PipelineError(
                f"{option} {path}: cannot write in {blocked} (not a writable folder); nothing was computed"
            )
        try:
            check_output_path(path, is_dir)
        except PipelineError as exc:
            raise PipelineError(f"{option} {exc}") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{path.parent}: cannot create the output's folder ({exc.strerror})") from None
    # left by a run that was killed (SIGKILL): only our own pattern, and only when its process is gone
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.rakuten-(\d+)-[^/]*\.tmp$")
    for stale in path.parent.glob(f".{glob_escape(path.name)}.rakuten-*.tmp"):
        match = pattern.match(stale.name)
        if match and not _pid_alive(int(match.group(1))):
            _remove(stale)
    prefix, suffix = f".{path.name}.rakuten-{os.getpid()}-", ".tmp"
    try:
        if is_dir:
            return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise PipelineError(f"{path.parent}: cannot write the output there ({exc.strerror})") from None
    os.close(fd)
    return Path(name)


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (a file called ``a[1].csv`` is matched literally)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _finish(tmp: Path, is_dir: bool) -> None:
    """Give a finished temporary output normal permissions (and a directory its marker)."""
    umask = current_umask()
    if is_dir:
        (tmp / OUTPUT_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        os.chmod(tmp, 0o777 & ~umask)
    else:
        os.chmod(tmp, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    ``path`` is checked first (:func:`check_output_path`): an error before any work, nothing
    touched. On any exception the temporary path is removed and ``path`` is left untouched.
    """
    final = Path(path)
    check_output_path(final, is_dir)
    tmp = _tmp_sibling(final, is_dir)
    try:
        yield tmp
        _finish(tmp, is_dir)
        check_output_path(final, is_dir)  # again: something may have appeared there while we worked
        if is_dir and final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.rakuten-{os.getpid()}-old.tmp")
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)  # a file (or a symlink) is replaced in one atomic step
    except BaseException:
        _remove(tmp)
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame to parquet atomically (no index, no ``attrs``).

    ``attrs`` are left out because pandas would store them in the file's metadata, and stages keep
    run facts there (seconds spent): the file's bytes must depend on the data only.
    """
    data = df.copy(deep=False)
    data.attrs = {}
    with atomic_path(path) as tmp:
        data.to_parquet(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically, sorted keys and indented so diffs stay readable."""
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default) + "\n",
            encoding="utf-8",
        )


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> None:
    """Write a CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_parquet(path: str | os.PathLike, stage_hint: str | None = None) -> pd.DataFrame:
    """Read a stage output; a missing file is a one-line error naming the stage that makes it."""
    path = Path(path)
    if not path.exists():
        hint = f" (run `dvc repro {stage_hint}`)" if stage_hint else ""
        raise PipelineError(f"{path}: file not found{hint}")
    return pd.read_parquet(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a one-line error if it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None

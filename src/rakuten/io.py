"""Atomic writes and small readers shared by every stage.

Every output is written to a temporary sibling and renamed into place at the end, so a stage
killed mid-run never leaves a file or directory that DVC could mistake for a valid output.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from rakuten.errors import PipelineError


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run that was killed (SIGKILL)
        _remove(stale)
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception the temporary path is removed and ``path`` is left untouched.
    """
    final = Path(path)
    tmp = _tmp_sibling(final, is_dir)
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
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
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default) + "\n",
                       encoding="utf-8")


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

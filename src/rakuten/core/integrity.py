"""Trained artifacts are checked against the hashes DVC recorded for them before anything loads them.

Why: a model folder can come from a DVC remote that someone else can write to, and ``dvc pull``
does not re-hash what it downloads unless the remote has ``verify = true``; two of the artifacts
(``model.joblib``, ``fusion.joblib``) are pickles, which run code when loaded. ``dvc.lock`` lives in
git, so the hash it records for ``models/<name>`` is the one the team reviewed and committed. Every
load of a trained model (the pipeline's stages, ``rakuten predict``, ``rakuten serve``) goes through
:func:`verified` first: the folder is hashed exactly as DVC hashes an output (MD5 of each file; a
folder's hash is the MD5 of its sorted ``[{"md5", "relpath"}]`` JSON listing plus ``.dir``) and a
mismatch is one line naming the file, the expected and the found hash. Nothing is unpickled, no
weight is read, before the hashes match.

When the folder's own listing is in the local DVC cache (``.dvc/cache/files/md5/xx/...dir``, itself
checked against its name), the error names the changed file; otherwise it names the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rakuten.core.errors import PipelineError

log = logging.getLogger(__name__)

LOCK_NAME = "dvc.lock"
CHUNK = 1 << 20
_CONFLICT = re.compile(r"^(<{7}|={7}|>{7})(\s|$)", re.MULTILINE)


class IntegrityError(PipelineError):
    """An artifact whose bytes differ from the hash recorded for it, or that has no recorded hash."""


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes, read in 1 MiB chunks (memory stays flat for GB-sized weights)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_listing(folder: Path) -> list[dict[str, str]]:
    """``[{"md5", "relpath"}]`` of every regular file under ``folder``, sorted by path, as DVC lists a
    folder output. A symlink or special file inside is refused: DVC never writes one into an output."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if Path(root, d).is_symlink()]:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                raise IntegrityError(f"{path}: not a regular file; a trained artifact holds only regular files")
            entries.append({"md5": file_md5(path), "relpath": path.relative_to(folder).as_posix()})
    return sorted(entries, key=lambda e: e["relpath"])


def listing_md5(entries: list[dict[str, str]]) -> str:
    """DVC's hash of a folder: the MD5 of its listing's JSON bytes, plus ``.dir``."""
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def hashed(path: Path) -> tuple[str, list[dict[str, str]] | None]:
    """The hash DVC records for ``path`` (a file or a folder output), and a folder's listing (None for a
    file), so that a mismatch can name the changed file without hashing the folder again."""
    if path.is_symlink() or not (path.is_dir() or path.is_file()):
        raise IntegrityError(f"{path}: not a regular file or folder")
    if path.is_dir():
        listing = tree_listing(path)
        return listing_md5(listing), listing
    return file_md5(path), None


def artifact_md5(path: Path) -> str:
    """The hash DVC records for ``path`` (a file or a folder output)."""
    return hashed(path)[0]


def parse_lock(text: str, name: str) -> dict[str, Any]:
    """The parsed ``dvc.lock``; a merge-conflicted, non-YAML or foreign file is one line naming it."""
    conflict = _CONFLICT.search(text)
    if conflict:
        line = text.count("\n", 0, conflict.start()) + 1
        raise PipelineError(
            f"{name}: line {line}: git conflict marker {conflict.group(1)!r}; resolve the merge "
            "(for example `git checkout --theirs dvc.lock`, then `dvc repro`)"
        )
    try:
        lock = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise PipelineError(f"{name}: {where}not valid YAML; expected a dvc.lock written by `dvc repro`") from None
    if not isinstance(lock, dict) or not isinstance(lock.get("stages"), dict) or "schema" not in lock:
        raise PipelineError(
            f"{name}: not a dvc.lock (expected a mapping with `schema` and `stages`, as `dvc repro` writes it)"
        )
    for stage, entry in lock["stages"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("outs") or [], list):
            raise PipelineError(f"{name}: stage {stage!r}: expected a mapping with an `outs` list")
        for out in entry.get("outs") or []:
            if not isinstance(out, dict) or not isinstance(out.get("path"), str):
                raise PipelineError(f"{name}: stage {stage!r}: an out without a `path`")
    return lock


@dataclass(frozen=True)
class ArtifactRecords:
    """The outputs recorded in one ``dvc.lock``: ``relpath -> (stage, out entry)``, paths relative to
    the lock's folder (the DVC project root)."""

    lock: Path
    root: Path
    outs: dict[str, tuple[str, dict]]
    stages: dict[str, dict] = field(default_factory=dict, compare=False, repr=False)  # the lock's stage entries
    checked: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # one hashing per folder

    @classmethod
    def from_lock(cls, lock: str | os.PathLike) -> "ArtifactRecords":
        lock = Path(lock)
        if not lock.is_file():
            raise PipelineError(
                f"{lock}: dvc.lock not found; trained artifacts are loaded only when the hashes "
                "DVC recorded for them are at hand (run `dvc repro`, or give the lock file)"
            )
        try:
            text = lock.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineError(f"{lock}: cannot read it as text ({type(exc).__name__})") from None
        parsed = parse_lock(text, str(lock))
        outs = {}
        for stage, entry in parsed["stages"].items():
            for out in entry.get("outs") or []:
                outs[Path(out["path"]).as_posix().rstrip("/")] = (str(stage), out)
        return cls(lock, lock.resolve().parent, outs, parsed["stages"])

    @classmethod
    def for_path(cls, path: str | os.PathLike) -> "ArtifactRecords":
        """The records of the DVC project holding ``path``: the nearest ``dvc.lock`` in its folder or above."""
        start = Path(path).resolve()
        for folder in (start, *start.parents):
            if (folder / LOCK_NAME).is_file():
                return cls.from_lock(folder / LOCK_NAME)
        raise IntegrityError(
            f"{path}: no dvc.lock in its folder or above; trained artifacts are loaded only when "
            "the hashes DVC recorded for them are at hand (run `dvc repro`, or give --lock)"
        )

    def key(self, path: Path) -> str | None:
        """``path`` relative to the project root, as dvc.lock names outputs (None: outside the project)."""
        resolved = Path(path).resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else None

    def recorded(self, path: Path) -> tuple[str, dict] | None:
        key = self.key(path)
        return self.outs.get(key) if key is not None else None

    def verify(self, path: str | os.PathLike) -> str:
        """Check ``path`` against its recorded hash; returns the hash. One line on any mismatch."""
        path = Path(path)
        found_record = self.recorded(path)
        if found_record is None:
            raise IntegrityError(
                f"{path}: no hash recorded for it in {self.lock}; trained artifacts are loaded "
                "only when DVC recorded them (run `dvc repro` or `dvc commit`)"
            )
        stage, out = found_record
        expected = str(out.get("md5") or "")
        if not expected:
            raise IntegrityError(
                f"{path}: no md5 recorded for it in {self.lock} (stage {stage}); run `dvc repro "
                f"{stage}` or `dvc commit`"
            )
        key = str(self.key(path))
        if self.checked.get(key) == expected:
            return expected
        if not path.exists():
            raise PipelineError(f"{path}: trained model not found; run `dvc pull` or `dvc repro {stage}`")
        found, listing = hashed(path)
        if found != expected:
            raise IntegrityError(self._mismatch(path, expected, found, listing))
        log.debug("%s: md5 %s matches %s", path, found, self.lock)
        self.checked[key] = found
        return found

    def _mismatch(self, path: Path, expected: str, found: str, listing: list[dict[str, str]] | None) -> str:
        hint = (
            f"refusing to load it; restore it with `dvc checkout {self.key(path)}` (or `dvc pull`) and check "
            f"who could write to the DVC remote"
        )
        recorded = self._cached_listing(expected) if expected.endswith(".dir") else None
        if recorded is not None and listing is not None:
            want = {e["relpath"]: e["md5"] for e in recorded}
            have = {e["relpath"]: e["md5"] for e in listing}
            for rel in sorted(set(want) | set(have)):
                if want.get(rel) != have.get(rel):
                    return (
                        f"{path / rel}: md5 {have.get(rel) or 'missing'}, expected {want.get(rel) or 'no such file'}"
                        f" ({self.lock}); {hint}"
                    )
        return f"{path}: md5 {found}, expected {expected} ({self.lock}); {hint}"

    def _cached_listing(self, dir_md5: str) -> list[dict[str, str]] | None:
        """The folder's listing from the local DVC cache, if there and intact (its MD5 is its name)."""
        value = dir_md5[: -len(".dir")]
        for cache in (self.root / ".dvc" / "cache" / "files" / "md5", self.root / ".dvc" / "cache"):
            obj = cache / value[:2] / f"{value[2:]}.dir"
            try:
                data = obj.read_bytes()
            except OSError:
                continue
            if hashlib.md5(data).hexdigest() != value:
                return None
            try:
                entries = json.loads(data)
                return [{"md5": str(e["md5"]), "relpath": str(e["relpath"])} for e in entries]
            except (ValueError, KeyError, TypeError):
                return None
        return None


def verified(path: str | os.PathLike, records: ArtifactRecords | None = None) -> Path:
    """``path`` after checking it against ``records`` (default: the dvc.lock of the project holding it)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: trained model not found; run `dvc repro` (or `dvc pull`)")
    (records or ArtifactRecords.for_path(path)).verify(path)
    return path

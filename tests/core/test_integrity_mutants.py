"""Artifact hashes against dvc.lock (rakuten.core.integrity) on hand-made folders and hand-written lock texts
(docs/mutation.md).

The folder hash is DVC's: MD5 of ``json.dumps(sorted [{"md5", "relpath"}], sort_keys=True)`` plus
``.dir``. ``DVC_ADD_HASH`` was cross-checked once by hand against a real ``dvc add`` (dvc 3.67.1, in
a scratch git + DVC repo) of the folder :func:`dvc_folder` builds; the other expected values are
computed by hand here, independently of the module.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from pathlib import Path

import pytest

from rakuten.core import integrity as I
from rakuten.core.errors import PipelineError
from rakuten.core.integrity import ArtifactRecords, IntegrityError
from tests.helpers.guards import ascii_locale, no_hang  # noqa: F401 (fixtures)

# `dvc add m` of dvc_folder(): the md5 recorded in m.dvc (and the name of its .dir object in the cache)
DVC_ADD_HASH = "66f3fadbcdb870b632f4059525abf764.dir"
DVC_ADD_LISTING = [  # the .dir object dvc wrote, byte for byte once json-dumped
    {"md5": "e1cbb0c3879af8347246f12c559a86b5", "relpath": "a.txt"},
    {"md5": "401b30e3b8b5d629635a5c613cdb7919", "relpath": "a/x"},
    {"md5": "4e82da0cca1f18a97843ba4c897cdc72", "relpath": "b"},
    {"md5": "c6242222cf6ccdb15a43e0e5b1a08810", "relpath": "crlf.txt"},
    {"md5": "d41d8cd98f00b204e9800998ecf8427e", "relpath": "sub/empty"},
]
HINT = (
    "refusing to load it; restore it with `dvc checkout {key}` (or `dvc pull`) and check who could write to "
    "the DVC remote"
)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def dir_md5(entries: list[dict]) -> str:
    """By hand: sorted by relpath, keys sorted, default json separators."""
    listing = sorted(({"md5": e["md5"], "relpath": e["relpath"]} for e in entries), key=lambda e: e["relpath"])
    return md5(json.dumps(listing, sort_keys=True).encode()) + ".dir"


def dvc_folder(root: Path) -> Path:
    """The folder given to `dvc add`: walk order (b, a.txt, crlf.txt, then a/x, sub/empty) differs from
    DVC's relpath order (a.txt < a/x: '.' sorts before '/'), CRLF bytes are hashed as they are (md5, not
    md5-dos2unix), an empty file counts and an empty folder does not."""
    m = root / "m"
    (m / "a").mkdir(parents=True)
    (m / "sub").mkdir()
    (m / "nothing").mkdir()
    (m / "b").write_bytes(b"bee\n")
    (m / "a" / "x").write_bytes(b"x\n")
    (m / "a.txt").write_bytes(b"text\n")
    (m / "sub" / "empty").write_bytes(b"")
    (m / "crlf.txt").write_bytes(b"line1\r\nline2\r\n")
    return m


def files(folder: Path, content: dict[str, bytes]) -> Path:
    for rel, data in content.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def lock_text(outs: dict[str, str | None], stage: str = "train") -> str:
    lines = ["schema: '2.0'", "stages:", f"  {stage}:", "    cmd: python train.py", "    outs:"]
    for path, value in outs.items():
        lines.append(f"    - path: {path}")
        if value is not None:
            lines.append(f"      md5: {value}")
        lines.append("      hash: md5")
    return "\n".join(lines) + "\n"


def project(tmp_path: Path, outs: dict[str, str | None], stage: str = "train") -> ArtifactRecords:
    (tmp_path / "dvc.lock").write_text(lock_text(outs, stage), encoding="utf-8")
    return ArtifactRecords.from_lock(tmp_path / "dvc.lock")


def cache_listing(root: Path, entries, layout: str = "files/md5", data: bytes | None = None) -> str:
    """Write a .dir object into root's DVC cache (named by its MD5); returns the folder hash."""
    data = json.dumps(entries, sort_keys=True).encode() if data is None else data
    value = md5(data)
    obj = root / ".dvc" / "cache" / layout / value[:2] / f"{value[2:]}.dir"
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    return value + ".dir"


def refused(records: ArtifactRecords, path: Path, kind=IntegrityError) -> str:
    with pytest.raises(PipelineError) as info:
        records.verify(path)
    assert type(info.value) is kind
    assert "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- hashing as DVC does


def test_the_folder_hash_is_the_one_dvc_add_recorded(tmp_path):
    m = dvc_folder(tmp_path)
    assert I.tree_listing(m) == DVC_ADD_LISTING
    assert I.listing_md5(DVC_ADD_LISTING) == DVC_ADD_HASH == dir_md5(DVC_ADD_LISTING)
    assert I.artifact_md5(m) == DVC_ADD_HASH


def test_listing_md5_sorts_the_keys_of_each_entry():
    entries = [{"relpath": "b", "md5": md5(b"bee\n")}]  # relpath first: json must sort the keys
    assert I.listing_md5(entries) == md5(b'[{"md5": "4e82da0cca1f18a97843ba4c897cdc72", "relpath": "b"}]') + ".dir"
    assert I.listing_md5([]) == md5(b"[]") + ".dir"


def test_a_file_hash_is_the_md5_of_its_bytes(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one chunk
    (tmp_path / "w.bin").write_bytes(data)
    assert I.file_md5(tmp_path / "w.bin") == md5(data)
    assert I.artifact_md5(tmp_path / "w.bin") == md5(data)
    (tmp_path / "e").write_bytes(b"")
    assert I.file_md5(tmp_path / "e") == "d41d8cd98f00b204e9800998ecf8427e"


def test_files_are_read_in_1_mib_chunks(tmp_path, monkeypatch):
    sizes = []

    class Handle:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def read(self, size=-1):
            sizes.append(size)
            return self.handle.read(size)

    def recording_open(path, mode="r", *args, **kwargs):
        assert mode == "rb"
        return Handle(builtins.open(path, mode, *args, **kwargs))

    monkeypatch.setattr(I, "open", recording_open, raising=False)
    data = b"z" * ((1 << 20) + 1)
    (tmp_path / "w").write_bytes(data)
    assert I.file_md5(tmp_path / "w") == md5(data)
    assert sizes == [1 << 20, 1 << 20, 1 << 20]


def test_listing_order_and_relpaths(tmp_path):
    folder = files(tmp_path / "f", {"b": b"1", "a/z/y": b"2", "a/x": b"3", "a.b": b"4", "c/d": b"5"})
    listing = I.tree_listing(folder)
    assert [e["relpath"] for e in listing] == ["a.b", "a/x", "a/z/y", "b", "c/d"]
    assert listing[2] == {"md5": md5(b"2"), "relpath": "a/z/y"}
    assert I.artifact_md5(folder) == dir_md5(listing)
    assert I.tree_listing(tmp_path / "f" / "a") == [
        {"md5": md5(b"3"), "relpath": "x"},
        {"md5": md5(b"2"), "relpath": "z/y"},
    ]


def test_a_symlink_inside_a_folder_is_refused(tmp_path):
    folder = files(tmp_path / "f", {"a": b"1", "d/e": b"2"})
    (tmp_path / "outside").write_bytes(b"secret")
    os.symlink(tmp_path / "outside", folder / "link")
    with pytest.raises(IntegrityError) as info:
        I.tree_listing(folder)
    assert str(info.value) == f"{folder / 'link'}: not a regular file; a trained artifact holds only regular files"
    (folder / "link").unlink()
    os.symlink(tmp_path / "f" / "d", folder / "dlink")  # a link to a folder: os.walk lists it as a dir
    with pytest.raises(IntegrityError, match=f"^{folder / 'dlink'}: not a regular file; "):
        I.tree_listing(folder)
    with pytest.raises(IntegrityError, match=f"^{folder / 'dlink'}: not a regular file; "):
        I.artifact_md5(folder)


def test_a_symlinked_artifact_is_refused(tmp_path):
    files(tmp_path, {"real": b"1", "d/x": b"2"})
    os.symlink(tmp_path / "real", tmp_path / "flink")
    os.symlink(tmp_path / "d", tmp_path / "dlink")
    for link in ("flink", "dlink"):
        with pytest.raises(IntegrityError) as info:
            I.artifact_md5(tmp_path / link)
        assert str(info.value) == f"{tmp_path / link}: not a regular file or folder"
    with pytest.raises(IntegrityError, match="not a regular file or folder$"):
        I.artifact_md5(tmp_path / "absent")


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    folder = files(tmp_path / "f", {"a": b"1"})
    os.mkfifo(folder / "pipe")
    with pytest.raises(IntegrityError, match=f"^{folder / 'pipe'}: not a regular file; "):
        I.tree_listing(folder)
    with pytest.raises(IntegrityError, match=f"^{folder / 'pipe'}: not a regular file or folder$"):
        I.artifact_md5(folder / "pipe")


# --------------------------------------------------------------------------- parse_lock


def test_a_valid_lock_is_returned_as_parsed():
    text = lock_text({"models/a": "0" * 32 + ".dir"}) + "  empty:\n    cmd: x\n  nulls:\n    cmd: y\n    outs:\n"
    lock = I.parse_lock(text, "L")
    assert lock["schema"] == "2.0"
    assert lock["stages"]["train"]["outs"] == [{"path": "models/a", "md5": "0" * 32 + ".dir", "hash": "md5"}]
    assert lock["stages"]["empty"] == {"cmd": "x"}
    assert I.parse_lock("schema: 1\nstages: {}\n", "L") == {"schema": 1, "stages": {}}


def lock_error(text: str) -> str:
    with pytest.raises(PipelineError) as info:
        I.parse_lock(text, "the/dvc.lock")
    assert type(info.value) is PipelineError and "\n" not in str(info.value)
    assert info.value.__cause__ is None
    return str(info.value)


CONFLICT_FIX = "; resolve the merge (for example `git checkout --theirs dvc.lock`, then `dvc repro`)"


@pytest.mark.parametrize(
    "text, line, marker",
    [
        ("<<<<<<< HEAD\nschema: '2.0'\n", 1, "<<<<<<<"),
        ("\n<<<<<<< HEAD\n", 2, "<<<<<<<"),
        ("schema: '2.0'\nstages:\n=======\n", 3, "======="),
        ("schema: '2.0'\nstages: {}\n>>>>>>> theirs\n", 3, ">>>>>>>"),
        ("schema: '2.0'\n>>>>>>>\tx\n", 2, ">>>>>>>"),
    ],
)
def test_a_conflict_marker_names_its_line(text, line, marker):
    assert lock_error(text) == f"the/dvc.lock: line {line}: git conflict marker {marker!r}{CONFLICT_FIX}"


def test_only_whole_markers_at_a_line_start_are_conflicts():
    text = "schema: '2.0'\nstages:\n  a:\n    cmd: echo <<<<<<< ======= >>>>>>>\n"
    assert I.parse_lock(text, "L")["stages"]["a"]["cmd"] == "echo <<<<<<< ======= >>>>>>>"
    assert lock_error("========\n").startswith("the/dvc.lock: not a dvc.lock")  # 8 '=': not a marker


BAD_YAML = "; expected a dvc.lock written by `dvc repro`"


@pytest.mark.parametrize(
    "text, where",
    [
        ("stages: [unclosed\n", "line 2: "),
        ("schema: '2.0'\nstages: {a: 1\n\n", "line 4: "),
        ("schema: '2.0'\n  bad: indent\n", "line 2: "),
        ("schema: \x00\n", ""),  # a reader error carries no problem_mark
    ],
)
def test_invalid_yaml_names_the_line_when_known(text, where):
    assert lock_error(text) == f"the/dvc.lock: {where}not valid YAML{BAD_YAML}"


NOT_A_LOCK = "the/dvc.lock: not a dvc.lock (expected a mapping with `schema` and `stages`, as `dvc repro` writes it)"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "- a\n- b\n",
        "just: a mapping\n",
        "schema: '2.0'\n",
        "stages: {}\n",
        "schema: '2.0'\nstages: [a]\n",
        "schema: '2.0'\nstages:\n",
    ],
)
def test_a_foreign_file_is_not_a_lock(text):
    assert lock_error(text) == NOT_A_LOCK


@pytest.mark.parametrize(
    "stages, message",
    [
        ("  a: [x]\n", "stage 'a': expected a mapping with an `outs` list"),
        ("  a: 3\n", "stage 'a': expected a mapping with an `outs` list"),
        ("  a:\n    outs: {path: x}\n", "stage 'a': expected a mapping with an `outs` list"),
        ("  a:\n    outs: x\n", "stage 'a': expected a mapping with an `outs` list"),
        ("  ok:\n    outs: []\n  b:\n    outs: [x]\n", "stage 'b': an out without a `path`"),
        ("  b:\n    outs: [{md5: 1}]\n", "stage 'b': an out without a `path`"),
        ("  b:\n    outs: [{path: 3}]\n", "stage 'b': an out without a `path`"),
        ("  b:\n    outs: [{path: ok}, {path: null}]\n", "stage 'b': an out without a `path`"),
    ],
)
def test_a_malformed_stage_is_named(stages, message):
    assert lock_error("schema: '2.0'\nstages:\n" + stages) == f"the/dvc.lock: {message}"


# --------------------------------------------------------------------------- reading the records


def test_records_map_each_out_path_to_its_stage(tmp_path, monkeypatch):
    text = (
        "schema: '2.0'\nstages:\n  7:\n    cmd: a\n    outs:\n    - path: models/x/\n      md5: h1\n"
        "    - path: ./reports/r.csv\n      md5: h2\n  other:\n    cmd: b\n  tail:\n    outs:\n"
        "    - path: 'sp '\n      md5: h3\n"
    )
    (tmp_path / "dvc.lock").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    records = ArtifactRecords.from_lock("dvc.lock")
    assert records.lock == Path("dvc.lock") and records.root == tmp_path.resolve()
    assert records.outs == {
        "models/x": ("7", {"path": "models/x/", "md5": "h1"}),
        "reports/r.csv": ("7", {"path": "./reports/r.csv", "md5": "h2"}),
        "sp ": ("tail", {"path": "sp ", "md5": "h3"}),
    }
    assert records.recorded(tmp_path / "models" / "x") == ("7", {"path": "models/x/", "md5": "h1"})
    assert records.recorded(Path("sp ")) == ("tail", {"path": "sp ", "md5": "h3"})
    assert records.recorded(Path("sp")) is None
    assert records.key(Path("models/x/../x")) == "models/x"
    assert records.key(tmp_path.parent / "elsewhere") is None
    assert records.recorded(tmp_path.parent / "models" / "x") is None
    assert records.checked == {}


def test_out_paths_are_kept_as_written(tmp_path):
    """An absolute (external) out is not a project path; a name's own trailing characters are kept."""
    text = (
        "schema: '2.0'\nstages:\n  s:\n    outs:\n    - path: /abs/m\n      md5: h1\n"
        "    - path: models/boX\n      md5: h2\n"
    )
    (tmp_path / "dvc.lock").write_text(text, encoding="utf-8")
    records = ArtifactRecords.from_lock(tmp_path / "dvc.lock")
    assert sorted(records.outs) == ["/abs/m", "models/boX"]
    assert records.recorded(tmp_path / "abs" / "m") is None
    assert records.recorded(tmp_path / "models" / "boX") == ("s", {"path": "models/boX", "md5": "h2"})


def test_a_missing_or_unreadable_lock_is_one_line(tmp_path):
    with pytest.raises(PipelineError) as info:
        ArtifactRecords.from_lock(tmp_path / "dvc.lock")
    assert str(info.value) == (
        f"{tmp_path / 'dvc.lock'}: dvc.lock not found; trained artifacts are loaded only "
        "when the hashes DVC recorded for them are at hand (run `dvc repro`, or give the "
        "lock file)"
    )
    (tmp_path / "dir.lock").mkdir()
    with pytest.raises(PipelineError, match="dvc.lock not found"):
        ArtifactRecords.from_lock(tmp_path / "dir.lock")
    (tmp_path / "dvc.lock").write_bytes("schema: '2.0'\nstages: {}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(PipelineError) as info:
        ArtifactRecords.from_lock(tmp_path / "dvc.lock")
    assert str(info.value) == f"{tmp_path / 'dvc.lock'}: cannot read it as text (UnicodeDecodeError)"
    assert info.value.__cause__ is None
    (tmp_path / "dvc.lock").write_text("<<<<<<< HEAD\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=f"^{tmp_path / 'dvc.lock'}: line 1: git conflict marker"):
        ArtifactRecords.from_lock(tmp_path / "dvc.lock")


def test_a_lock_is_read_as_utf8_whatever_the_locale(tmp_path, ascii_locale):
    (tmp_path / "dvc.lock").write_bytes(lock_text({"caf\xe9": "h"}).encode("utf-8"))
    assert list(ArtifactRecords.from_lock(tmp_path / "dvc.lock").outs) == ["caf\xe9"]


def test_the_nearest_lock_above_a_path_is_used(tmp_path, monkeypatch):
    files(tmp_path, {"proj/models/m/w": b"1", "proj/sub/models/n/w": b"2"})
    project(tmp_path / "proj", {"models/m": None})
    project(tmp_path / "proj" / "sub", {"models/n": None})
    assert ArtifactRecords.for_path(tmp_path / "proj" / "models" / "m").lock == tmp_path / "proj" / "dvc.lock"
    assert ArtifactRecords.for_path(tmp_path / "proj" / "models" / "m" / "w").root == tmp_path / "proj"
    assert (
        ArtifactRecords.for_path(tmp_path / "proj" / "sub" / "models" / "n").lock
        == tmp_path / "proj" / "sub" / "dvc.lock"
    )
    assert ArtifactRecords.for_path(tmp_path / "proj").lock == tmp_path / "proj" / "dvc.lock"
    monkeypatch.chdir(tmp_path / "proj" / "models")
    assert ArtifactRecords.for_path("m").lock == tmp_path / "proj" / "dvc.lock"
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "dvc.lock").mkdir()  # a folder called dvc.lock is not a lock
    with pytest.raises(IntegrityError) as info:
        ArtifactRecords.for_path(tmp_path / "lone")
    assert str(info.value) == (
        f"{tmp_path / 'lone'}: no dvc.lock in its folder or above; trained artifacts are "
        "loaded only when the hashes DVC recorded for them are at hand (run `dvc repro`, "
        "or give --lock)"
    )


# --------------------------------------------------------------------------- verify


def test_a_matching_folder_and_file_pass_and_return_their_hash(tmp_path):
    m = dvc_folder(tmp_path)
    files(tmp_path, {"r.csv": b"a,b\n"})
    records = project(tmp_path, {"m": DVC_ADD_HASH, "r.csv": md5(b"a,b\n")})
    assert records.verify(m) == DVC_ADD_HASH
    assert records.verify(str(tmp_path / "r.csv")) == md5(b"a,b\n")
    assert records.checked == {"m": DVC_ADD_HASH, "r.csv": md5(b"a,b\n")}
    assert I.verified(str(m), records) == m
    assert I.verified(tmp_path / "r.csv") == tmp_path / "r.csv"  # default: the lock above it


def test_a_folder_is_hashed_once_per_records(tmp_path, monkeypatch):
    m = dvc_folder(tmp_path)
    records = project(tmp_path, {"m": DVC_ADD_HASH})
    calls = []
    real = I.hashed
    monkeypatch.setattr(I, "hashed", lambda path: calls.append(path) or real(path))
    assert records.verify(m) == DVC_ADD_HASH and records.verify(tmp_path / "m" / ".." / "m") == DVC_ADD_HASH
    assert calls == [m]
    fresh = ArtifactRecords.from_lock(tmp_path / "dvc.lock")
    assert fresh.verify(m) == DVC_ADD_HASH and len(calls) == 2
    records.checked["m"] = "stale"  # a different hash cached: hashed again
    assert records.verify(m) == DVC_ADD_HASH and len(calls) == 3


def test_an_unrecorded_artifact_is_refused(tmp_path):
    files(tmp_path, {"m/w": b"1", "other/w": b"2"})
    records = project(tmp_path, {"m": dir_md5([{"md5": md5(b"1"), "relpath": "w"}])})
    message = refused(records, tmp_path / "other")
    assert message == (
        f"{tmp_path / 'other'}: no hash recorded for it in {tmp_path / 'dvc.lock'}; trained "
        "artifacts are loaded only when DVC recorded them (run `dvc repro` or `dvc commit`)"
    )
    assert refused(records, tmp_path / "m" / "w").startswith(f"{tmp_path / 'm' / 'w'}: no hash recorded")
    assert refused(records, tmp_path.parent).startswith(f"{tmp_path.parent}: no hash recorded")


def test_a_missing_artifact_names_the_stage_that_makes_it(tmp_path):
    records = project(tmp_path, {"models/m": "0" * 32 + ".dir"}, stage="train_m")
    assert refused(records, tmp_path / "models" / "m", PipelineError) == (
        f"{tmp_path / 'models' / 'm'}: trained model not found; run `dvc pull` or `dvc repro train_m`"
    )
    with pytest.raises(PipelineError) as info:
        I.verified(tmp_path / "models" / "m", records)
    assert type(info.value) is PipelineError
    assert str(info.value) == f"{tmp_path / 'models' / 'm'}: trained model not found; run `dvc repro` (or `dvc pull`)"


def test_an_out_without_md5_matches_nothing(tmp_path):
    files(tmp_path, {"r.csv": b"x"})
    records = project(tmp_path, {"r.csv": None})
    assert refused(records, tmp_path / "r.csv") == (
        f"{tmp_path / 'r.csv'}: no md5 recorded for it in {tmp_path / 'dvc.lock'} (stage train); run `dvc repro "
        "train` or `dvc commit`"
    )
    assert records.checked == {}


def test_a_changed_file_artifact_is_named_with_both_hashes(tmp_path):
    files(tmp_path, {"models/model.joblib": b"evil pickle"})
    records = project(tmp_path, {"models/model.joblib": md5(b"good pickle")})
    assert refused(records, tmp_path / "models" / "model.joblib") == (
        f"{tmp_path / 'models' / 'model.joblib'}: md5 {md5(b'evil pickle')}, expected {md5(b'good pickle')} "
        f"({tmp_path / 'dvc.lock'}); {HINT.format(key='models/model.joblib')}"
    )
    assert records.checked == {}
    with pytest.raises(IntegrityError, match="^.*model.joblib: md5 "):
        I.verified(tmp_path / "models" / "model.joblib")


GOOD = {"w.pt": b"weights", "tok/vocab.json": b"{}", "cfg.json": b'{"a": 1}'}


def good_listing() -> list[dict]:
    return sorted(({"md5": md5(v), "relpath": k} for k, v in GOOD.items()), key=lambda e: e["relpath"])


def tampered_models(tmp_path: Path, layout: str | None = "files/md5"):
    """models/m written as recorded, its listing in the DVC cache (``layout``; None: no cache)."""
    m = files(tmp_path / "models" / "m", GOOD)
    expected = cache_listing(tmp_path, good_listing(), layout) if layout else dir_md5(good_listing())
    assert expected == dir_md5(good_listing())
    return m, project(tmp_path, {"models/m": expected}), expected


@pytest.mark.parametrize("layout", ["files/md5", "."])  # DVC 3 and DVC 2 cache layouts
def test_with_the_cached_listing_the_changed_file_is_named(tmp_path, layout):
    m, records, _ = tampered_models(tmp_path, layout)
    changed = b'{"x": 1}'
    (m / "tok" / "vocab.json").write_bytes(changed)
    assert refused(records, m) == (
        f"{m / 'tok' / 'vocab.json'}: md5 {md5(changed)}, expected {md5(b'{}')} ({tmp_path / 'dvc.lock'}); "
        f"{HINT.format(key='models/m')}"
    )


def test_a_removed_or_added_file_is_named(tmp_path):
    m, records, _ = tampered_models(tmp_path)
    (m / "cfg.json").unlink()
    assert refused(records, m).startswith(f"{m / 'cfg.json'}: md5 missing, expected {md5(GOOD['cfg.json'])} (")
    (m / "cfg.json").write_bytes(GOOD["cfg.json"])
    (m / "aaa.txt").write_bytes(b"extra")
    assert refused(records, m).startswith(f"{m / 'aaa.txt'}: md5 {md5(b'extra')}, expected no such file (")
    (m / "aaa.txt").unlink()
    assert records.verify(m) == dir_md5(good_listing())


def test_the_first_changed_file_in_path_order_is_named(tmp_path):
    content = {f"f{i:02d}": b"%d" % i for i in range(40)}
    m = files(tmp_path / "models" / "m", content)
    expected = cache_listing(tmp_path, I.tree_listing(m))
    records = project(tmp_path, {"models/m": expected})
    for i in range(40):
        if i not in (0, 1, 2):
            (m / f"f{i:02d}").write_bytes(b"changed")
    assert refused(records, m).startswith(f"{m / 'f03'}: md5 {md5(b'changed')}, expected {md5(b'3')} (")


def test_without_a_cached_listing_the_folder_is_named(tmp_path):
    m, records, expected = tampered_models(tmp_path, None)
    (m / "w.pt").write_bytes(b"zeroed")
    kept = [e for e in good_listing() if e["relpath"] != "w.pt"]
    found = dir_md5([*kept, {"md5": md5(b"zeroed"), "relpath": "w.pt"}])
    assert refused(records, m) == (
        f"{m}: md5 {found}, expected {expected} ({tmp_path / 'dvc.lock'}); {HINT.format(key='models/m')}"
    )


def test_a_file_recorded_as_a_folder_is_named_as_a_whole(tmp_path):
    m, records, expected = tampered_models(tmp_path)
    for child in sorted(m.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    m.rmdir()
    m.write_bytes(b"a file now")
    assert refused(records, m) == (
        f"{m}: md5 {md5(b'a file now')}, expected {expected} ({tmp_path / 'dvc.lock'}); {HINT.format(key='models/m')}"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"not json",  # ValueError
        b'[{"md5": "x"}]',  # KeyError: no relpath
        b"[1, 2]",  # TypeError
        b"7",  # TypeError: not iterable
    ],
)
def test_a_broken_cached_listing_falls_back_to_the_folder(tmp_path, data):
    m = files(tmp_path / "models" / "m", GOOD)
    expected = cache_listing(tmp_path, None, data=data)
    records = project(tmp_path, {"models/m": expected})
    assert refused(records, m).startswith(f"{m}: md5 {dir_md5(good_listing())}, expected {expected} (")
    assert records._cached_listing(expected) is None


def test_a_cached_listing_that_does_not_match_its_name_is_ignored(tmp_path):
    m, records, expected = tampered_models(tmp_path)
    value = expected[:-4]
    obj = tmp_path / ".dvc" / "cache" / "files" / "md5" / value[:2] / f"{value[2:]}.dir"
    forged = [{"md5": md5(b"anything"), "relpath": "w.pt"}]
    obj.write_bytes(json.dumps(forged).encode())
    old = tmp_path / ".dvc" / "cache" / value[:2] / f"{value[2:]}.dir"  # a good one in the DVC 2 place
    old.parent.mkdir(parents=True)
    old.write_bytes(json.dumps(good_listing(), sort_keys=True).encode())
    (m / "w.pt").write_bytes(b"zeroed")
    assert records._cached_listing(expected) is None  # the first one found decides
    assert refused(records, m).startswith(f"{m}: md5 ")


def test_cached_listings_are_read_as_md5_relpath_strings(tmp_path):
    entries = [{"md5": md5(b"1"), "relpath": "a", "size": 1, "isexec": False}]
    expected = cache_listing(tmp_path, entries)
    records = project(tmp_path, {"m": expected})
    assert records._cached_listing(expected) == [{"md5": md5(b"1"), "relpath": "a"}]
    numbers = cache_listing(tmp_path, None, data=b'[{"md5": 12, "relpath": 3}]')
    assert records._cached_listing(numbers) == [{"md5": "12", "relpath": "3"}]
    assert records._cached_listing("f" * 32 + ".dir") is None


def test_a_listing_equal_except_for_extra_keys_falls_back_to_the_folder(tmp_path):
    m = files(tmp_path / "models" / "m", GOOD)
    listing = [{**e, "size": 1} for e in good_listing()]
    expected = cache_listing(tmp_path, listing)
    records = project(tmp_path, {"models/m": expected})
    assert refused(records, m) == (
        f"{m}: md5 {dir_md5(good_listing())}, expected {expected} "
        f"({tmp_path / 'dvc.lock'}); {HINT.format(key='models/m')}"
    )


def test_a_symlink_in_a_tampered_folder_is_refused_too(tmp_path):
    m, records, _ = tampered_models(tmp_path)
    os.symlink(tmp_path / "dvc.lock", m / "zlink")
    assert refused(records, m) == f"{m / 'zlink'}: not a regular file; a trained artifact holds only regular files"


def test_verified_finds_the_lock_and_refuses_a_mismatch(tmp_path, monkeypatch):
    m, _, _ = tampered_models(tmp_path)
    monkeypatch.chdir(tmp_path / "models")
    assert I.verified("m") == Path("m")
    assert isinstance(I.verified("m"), Path)
    (m / "w.pt").write_bytes(b"zeroed")
    with pytest.raises(IntegrityError, match=f"^{Path('m') / 'w.pt'}: md5 {md5(b'zeroed')}, expected "):
        I.verified("m")


def test_the_records_keep_each_stage_entry(tmp_path):
    """`/metadata` reads each artifact's stage params from the records, not from a second parse of the lock."""
    records = project(tmp_path, {"m": DVC_ADD_HASH}, stage="train_m")
    assert records.stages == {
        "train_m": {"cmd": "python train.py", "outs": [{"path": "m", "md5": DVC_ADD_HASH, "hash": "md5"}]}
    }
